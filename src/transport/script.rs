//! Tests' scripted HTTP/1.1 server: reads one request, then writes and pauses as told, for the
//! timings and faults of a streamed answer that a real server does not produce on demand.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

/// One step of the answer.
#[derive(Debug, Clone)]
pub enum Step {
    /// Bytes written as they are (a head, or a body without chunked framing).
    Raw(Vec<u8>),
    /// One chunk of a chunked body.
    Chunk(Vec<u8>),
    /// The chunked body's end.
    End,
    Pause(Duration),
    /// Waits until the client closes the connection.
    Hold,
}

/// The head of a 200 answer of `content_type` with a chunked body.
pub fn chunked_head(content_type: &str) -> Step {
    Step::Raw(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        .into_bytes(),
    )
}

/// Serves `steps` to each connection, after reading its request; returns the port. The
/// connection closes after the last step. Write errors (the client gone) end the connection.
pub fn serve(steps: Vec<Step>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let steps = steps.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                for step in steps {
                    let written = match step {
                        Step::Raw(bytes) => stream.write_all(&bytes),
                        Step::Chunk(bytes) => {
                            let mut framed = format!("{:x}\r\n", bytes.len()).into_bytes();
                            framed.extend_from_slice(&bytes);
                            framed.extend_from_slice(b"\r\n");
                            stream.write_all(&framed)
                        }
                        Step::End => stream.write_all(b"0\r\n\r\n"),
                        Step::Pause(d) => {
                            std::thread::sleep(d);
                            Ok(())
                        }
                        Step::Hold => {
                            let mut rest = Vec::new();
                            let _ = reader.read_to_end(&mut rest);
                            Ok(())
                        }
                    };
                    if written.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}
