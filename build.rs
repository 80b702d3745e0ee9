//! Compiles `proto/grpc_service.proto` (Triton's gRPC protocol, the part we use) into prost
//! messages. protox parses it in Rust, so building needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/grpc_service.proto");
    let descriptors = protox::compile(["grpc_service.proto"], ["proto"])?;
    prost_build::Config::new()
        // Byte fields as `Bytes`: decoded from a `Bytes` buffer they are slices of it, not copies.
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
