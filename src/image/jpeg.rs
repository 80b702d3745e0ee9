//! Windowed JPEG decoding with libjpeg-turbo's code (through `mozjpeg-sys`) and Pillow's settings:
//! integer IDCT, fancy upsampling, RGB out (grayscale replicated), CMYK and YCCK through Pillow's
//! `CMYK -> RGB` conversion. The pixels are the ones Pillow decodes.
//!
//! Only the rows and columns a caller asks for go through the IDCT, upsampling and colour conversion
//! (`jpeg_skip_scanlines`, `jpeg_crop_scanline`), and rows below the window are never decoded. The
//! window is widened by [`MARGIN`] pixels on every side before it reaches libjpeg, because libjpeg
//! treats the edge of a cropped region as an image edge when it upsamples chroma; the pixels inside
//! the caller's window are therefore those of a full decode.

use std::ops::Range;
use std::os::raw::c_ulong;

use mozjpeg_sys as ffi;

/// Pixels of context kept around a requested window (two 4:2:0 MCUs).
const MARGIN: usize = 32;

/// A JPEG whose header has been read, ready to decode a window of it.
pub struct Jpeg<'a> {
    // Boxed: libjpeg keeps pointers to both.
    cinfo: Box<ffi::jpeg_decompress_struct>,
    err: Box<ffi::jpeg_error_mgr>,
    bytes: &'a [u8],
}

/// Runs `f`, turning libjpeg's fatal errors (raised by unwinding from `error_exit`) into `Err`.
fn guard<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        payload.downcast_ref::<String>().map_or_else(
            || "JPEG decoding failed".to_string(),
            |m| format!("JPEG decoding failed: {m}"),
        )
    })
}

/// libjpeg's fatal error handler: formats the message and unwinds with it into [`guard`] (libjpeg
/// must not return from it).
///
/// # Safety
/// Called by libjpeg only, with a `cinfo` whose error manager is the one `Jpeg::open` installed,
/// from inside [`guard`].
unsafe extern "C-unwind" fn error_exit(cinfo: &mut ffi::jpeg_common_struct) {
    let mut buffer = [0u8; 80];
    // SAFETY: libjpeg calls error_exit with the error manager installed by `Jpeg::open`; its
    // format_message writes at most JMSG_LENGTH_MAX (80) bytes, NUL-terminated, into `buffer` (the
    // binding declares the buffer shared, but libjpeg writes to it).
    let message = unsafe {
        match cinfo.err.as_ref().and_then(|err| err.format_message) {
            Some(format) => {
                let format = std::mem::transmute::<
                    unsafe extern "C-unwind" fn(&mut ffi::jpeg_common_struct, &[u8; 80]),
                    unsafe extern "C-unwind" fn(&mut ffi::jpeg_common_struct, &mut [u8; 80]),
                >(format);
                format(cinfo, &mut buffer);
                let text = buffer.split(|&c| c == 0).next().unwrap_or_default();
                String::from_utf8_lossy(text).into_owned()
            }
            None => "unknown libjpeg error".to_string(),
        }
    };
    std::panic::resume_unwind(Box::new(message));
}

/// libjpeg's warning handler: warnings are not reported (Pillow ignores them too).
///
/// # Safety
/// Does nothing with its arguments.
unsafe extern "C-unwind" fn silence(_cinfo: &mut ffi::jpeg_common_struct, _level: i32) {}

impl<'a> Jpeg<'a> {
    /// Reads the header of the JPEG in `bytes`.
    pub fn open(bytes: &'a [u8]) -> Result<Self, String> {
        // SAFETY: both structs are plain C data for which all-zero is the state libjpeg expects
        // before jpeg_std_error / jpeg_create_decompress; they are boxed so their addresses stay put.
        let mut jpeg = unsafe {
            Jpeg {
                cinfo: Box::new(std::mem::zeroed()),
                err: Box::new(std::mem::zeroed()),
                bytes,
            }
        };
        // SAFETY: `err` and `cinfo` are zeroed, boxed (their addresses stay put while libjpeg keeps
        // pointers to them) and live as long as `jpeg`; the error manager is installed before
        // jpeg_create_decompress, so every fatal error unwinds from `error_exit` into `guard`; the
        // source is `bytes`, which `jpeg` borrows for its whole life.
        guard(|| unsafe {
            ffi::jpeg_std_error(&mut jpeg.err);
            jpeg.err.error_exit = Some(error_exit);
            jpeg.err.emit_message = Some(silence);
            jpeg.cinfo.common.err = &raw mut *jpeg.err;
            ffi::jpeg_create_decompress(&raw mut *jpeg.cinfo);
            ffi::jpeg_mem_src(&mut jpeg.cinfo, bytes.as_ptr(), bytes.len() as c_ulong);
            ffi::jpeg_read_header(&mut jpeg.cinfo, 1);
        })?;
        Ok(jpeg)
    }

    /// Width and height in pixels.
    pub fn size(&self) -> (usize, usize) {
        (
            self.cinfo.image_width as usize,
            self.cinfo.image_height as usize,
        )
    }

    /// Decodes rows `rows` of the image and calls `sink(first_column, pixels)` for each, in order:
    /// `pixels` holds the row as RGBX (four bytes a pixel, the fourth unspecified) from
    /// `first_column` on, covering at least `cols`, followed by `slack` zero bytes.
    pub fn decode_window(
        mut self,
        rows: Range<usize>,
        cols: Range<usize>,
        slack: usize,
        mut sink: impl FnMut(usize, &[u8]),
    ) -> Result<(), String> {
        let (width, height) = self.size();
        assert!(rows.start < rows.end && rows.end <= height);
        assert!(cols.start < cols.end && cols.end <= width);
        let cmyk = matches!(
            self.cinfo.jpeg_color_space,
            ffi::J_COLOR_SPACE::JCS_CMYK | ffi::J_COLOR_SPACE::JCS_YCCK
        );
        let inverted = cmyk && has_adobe_marker(self.bytes);
        let first_row = rows.start.saturating_sub(MARGIN);
        let cinfo = &mut *self.cinfo;
        // SAFETY: `cinfo` is the decoder `open` set up (header read, error manager installed); the
        // crop `x..x + w` lies within the image (`cols.end <= width`) and the rows skipped lie before
        // `rows.end <= height`, as jpeg_crop_scanline and jpeg_skip_scanlines require; fatal errors
        // unwind into `guard`.
        let (first_col, w, channels) = guard(|| unsafe {
            cinfo.out_color_space = if cmyk {
                ffi::J_COLOR_SPACE::JCS_CMYK
            } else {
                // the same conversion as JCS_RGB, padded to four bytes
                ffi::J_COLOR_SPACE::JCS_EXT_RGBX
            };
            ffi::jpeg_start_decompress(cinfo);
            let x = cols.start.saturating_sub(MARGIN);
            let end = (cols.end + MARGIN).min(width);
            let (mut x, mut w) = (x as ffi::JDIMENSION, (end - x) as ffi::JDIMENSION);
            if (w as usize) < width {
                // rounds x down to an iMCU boundary and widens w to match
                ffi::jpeg_crop_scanline(cinfo, &mut x, &mut w);
            }
            if first_row > 0 {
                ffi::jpeg_skip_scanlines(cinfo, first_row as ffi::JDIMENSION);
            }
            (x as usize, w as usize, cinfo.output_components as usize)
        })?;
        assert_eq!(channels, 4);
        if cinfo.output_scanline as usize != first_row || cinfo.output_width as usize != w {
            return Err("JPEG decoding failed: libjpeg could not skip to the window".into());
        }
        // libjpeg-turbo's SIMD colour conversion writes rows that start on a 32-byte boundary with
        // non-temporal stores, which bypass the cache the caller is about to read the row from
        // (measured: the horizontal pass 2-3x slower). A row 4 bytes past a boundary is written
        // through the cache.
        let len = w * channels + slack;
        let mut buffer = vec![0u8; len + 64];
        let skew = (36 - buffer.as_ptr() as usize % 32) % 32;
        let row = &mut buffer[skew..skew + len];
        for y in first_row..rows.end {
            // SAFETY: `row` holds `w * channels` bytes (the cropped output width in RGBX or CMYK,
            // four bytes a pixel, checked above) and more; libjpeg writes one scanline into it.
            let read = guard(|| unsafe {
                let mut line = row.as_mut_ptr();
                ffi::jpeg_read_scanlines(cinfo, &raw mut line, 1)
            })?;
            if read != 1 {
                return Err(format!("JPEG decoding failed: no data for row {y}"));
            }
            if y < rows.start {
                continue;
            }
            if cmyk {
                for p in row[..w * channels].chunks_exact_mut(4) {
                    let [r, g, b] = cmyk_to_rgb(p, inverted);
                    p[..3].copy_from_slice(&[r, g, b]);
                }
            }
            sink(first_col, row);
        }
        Ok(())
    }
}

impl Drop for Jpeg<'_> {
    fn drop(&mut self) {
        // Frees everything, whatever state an error left the decoder in (rows after the window are
        // not read: destroying aborts the decompression).
        let cinfo = &mut *self.cinfo;
        // SAFETY: `cinfo` was created by jpeg_create_decompress in `open` and is destroyed once,
        // here; libjpeg's own memory goes with it, ours (the boxes) after.
        let _ = guard(|| unsafe { ffi::jpeg_destroy_decompress(cinfo) });
    }
}

/// Pillow's `cmyk2rgb` (`Convert.c`), after its `CMYK;I` unpacking of Adobe files.
fn cmyk_to_rgb(p: &[u8], inverted: bool) -> [u8; 3] {
    let v = |x: u8| i32::from(if inverted { 255 - x } else { x });
    let nk = 255 - v(p[3]);
    let channel = |x: i32| {
        let tmp = x * nk + 128;
        let scaled = ((tmp >> 8) + tmp) >> 8;
        (nk - scaled).clamp(0, 255) as u8
    };
    [channel(v(p[0])), channel(v(p[1])), channel(v(p[2]))]
}

/// Whether the JPEG carries an Adobe APP14 segment before its first scan (Pillow then reads CMYK
/// as inverted).
fn has_adobe_marker(bytes: &[u8]) -> bool {
    let header_end = bytes
        .windows(2)
        .position(|w| w == [0xFF, 0xDA])
        .unwrap_or(bytes.len());
    bytes[..header_end]
        .windows(9)
        .any(|w| w[..2] == [0xFF, 0xEE] && &w[4..] == b"Adobe")
}

/// A JPEG is complete when an end-of-image marker follows its last start-of-scan marker.
/// Decoders fill a truncated scan with grey instead of failing; Pillow refuses such files.
pub fn is_complete(bytes: &[u8]) -> bool {
    // 0xFF bytes, found backwards with SIMD, are rare in entropy-coded data
    let last = |marker: u8| {
        let body = &bytes[..bytes.len().saturating_sub(1)];
        memchr::memrchr_iter(0xFF, body).find(|&i| bytes[i + 1] == marker)
    };
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A noisy JPEG with libjpeg's default 4:2:0 subsampling, so that chroma upsampling matters;
    /// baseline or progressive.
    fn encode(width: usize, height: usize, gray: bool, progressive: bool) -> Vec<u8> {
        let mut seed = 0x2545_F491_u32;
        let channels = if gray { 1 } else { 3 };
        let pixels: Vec<u8> = (0..width * height * channels)
            .map(|i| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                let (x, y) = (i / channels % width, i / channels / width);
                (x * 3 + y * 2 + (seed % 64) as usize * (i % 3 + 1)) as u8
            })
            .collect();
        // SAFETY: the usual libjpeg compression sequence on zero-initialised structs; the output
        // buffer is malloc'ed by jpeg_mem_dest and freed here.
        unsafe {
            let mut err: ffi::jpeg_error_mgr = std::mem::zeroed();
            let mut c: ffi::jpeg_compress_struct = std::mem::zeroed();
            c.common.err = ffi::jpeg_std_error(&mut err);
            ffi::jpeg_create_compress(&raw mut c);
            let (mut buffer, mut size): (*mut u8, c_ulong) = (std::ptr::null_mut(), 0);
            ffi::jpeg_mem_dest(&mut c, &raw mut buffer, &raw mut size);
            c.image_width = width as u32;
            c.image_height = height as u32;
            c.input_components = channels as i32;
            c.in_color_space = if gray {
                ffi::J_COLOR_SPACE::JCS_GRAYSCALE
            } else {
                ffi::J_COLOR_SPACE::JCS_RGB
            };
            ffi::jpeg_c_set_int_param(
                &mut c,
                ffi::J_INT_PARAM::JINT_COMPRESS_PROFILE,
                ffi::JCP_FASTEST as i32,
            );
            ffi::jpeg_set_defaults(&mut c);
            ffi::jpeg_set_quality(&mut c, 90, 1);
            if progressive {
                ffi::jpeg_simple_progression(&mut c);
            }
            ffi::jpeg_start_compress(&mut c, 1);
            for row in pixels.chunks_exact(width * channels) {
                let line = row.as_ptr();
                ffi::jpeg_write_scanlines(&mut c, &raw const line, 1);
            }
            ffi::jpeg_finish_compress(&mut c);
            let out = std::slice::from_raw_parts(buffer, size as usize).to_vec();
            ffi::jpeg_destroy_compress(&mut c);
            libc::free(buffer.cast());
            let sof = out
                .windows(2)
                .position(|w| w == [0xFF, if progressive { 0xC2 } else { 0xC0 }])
                .unwrap();
            // the first component's sampling factors: 2x2 against 1x1 chroma is 4:2:0
            assert_eq!(out[sof + 11], if gray { 0x11 } else { 0x22 });
            out
        }
    }

    fn decode(bytes: &[u8], rows: Range<usize>, cols: Range<usize>) -> Vec<u8> {
        let mut out = Vec::new();
        let want = cols.clone();
        Jpeg::open(bytes)
            .unwrap()
            .decode_window(rows, cols, 8, |first, px| {
                assert!(px.ends_with(&[0; 8]));
                for p in px[(want.start - first) * 4..(want.end - first) * 4].chunks_exact(4) {
                    out.extend_from_slice(&p[..3]);
                }
            })
            .unwrap();
        out
    }

    #[test]
    fn window_pixels_equal_full_decode() {
        for (w, h, gray, progressive) in [
            (301, 257, false, false),
            (640, 480, false, true),
            (97, 503, true, false),
        ] {
            let bytes = encode(w, h, gray, progressive);
            let full = decode(&bytes, 0..h, 0..w);
            assert_eq!(full.len(), w * h * 3);
            for (rows, cols) in [
                (0..h, 1..w - 1),
                (h / 3..h / 3 + 50, w / 4..w / 4 + 40),
                (h - 61..h, 33..w),
                (5..6, w - 1..w),
            ] {
                let win = decode(&bytes, rows.clone(), cols.clone());
                let expected: Vec<u8> = rows
                    .clone()
                    .flat_map(|y| full[(y * w + cols.start) * 3..(y * w + cols.end) * 3].to_vec())
                    .collect();
                assert!(win == expected, "{w}x{h} rows {rows:?} cols {cols:?}");
            }
        }
    }

    #[test]
    fn corrupt_data_is_an_error_not_a_panic() {
        let mut bytes = encode(64, 64, false, false);
        assert!(is_complete(&bytes));
        // a start-of-frame with zero height
        let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        bytes[sof + 5] = 0;
        bytes[sof + 6] = 0;
        let err = Jpeg::open(&bytes)
            .err()
            .expect("a zero-height frame must fail");
        assert!(err.starts_with("JPEG decoding failed: "), "{err}");
        assert!(Jpeg::open(b"\xFF\xD8 not really").is_err());
    }

    #[test]
    fn truncation_is_detected() {
        let bytes = encode(64, 64, false, false);
        assert!(!is_complete(&bytes[..bytes.len() / 2]));
        assert!(!is_complete(&bytes[..bytes.len() - 1]));
        assert!(!is_complete(b""));
        assert!(!is_complete(b"\xFF"));
        // bytes after the end-of-image marker do not matter
        assert!(is_complete(&[&bytes[..], b"\xFF\x00trailing\xFF"].concat()));
        // progressive: cut inside the last scan, after all earlier ones ended
        let progressive = encode(64, 64, false, true);
        assert!(is_complete(&progressive));
        let last_scan = progressive
            .windows(2)
            .rposition(|w| w == [0xFF, 0xDA])
            .unwrap();
        assert!(
            last_scan
                > progressive
                    .windows(2)
                    .position(|w| w == [0xFF, 0xDA])
                    .unwrap()
        );
        assert!(!is_complete(&progressive[..last_scan + 20]));
    }

    #[test]
    fn cmyk_follows_pillow() {
        assert_eq!(cmyk_to_rgb(&[0, 0, 0, 0], false), [255, 255, 255]);
        assert_eq!(cmyk_to_rgb(&[255, 255, 255, 255], true), [255, 255, 255]);
        assert_eq!(cmyk_to_rgb(&[0, 255, 255, 0], false), [255, 0, 0]);
    }
}
