//! A small GGUF command-line tool over coil-core's reader and writer.
//!
//! * `gguf_tool inspect FILE [ARRAY_HEAD]`: prints the inspection JSON (arrays longer than
//!   ARRAY_HEAD summarised; default 16, -1 for full arrays).
//! * `gguf_tool roundtrip FILE [OUT]`: reads FILE, writes it back with `GgufWriter::from_file`,
//!   reports whether the bytes are identical (and writes them to OUT if given).
//! * `gguf_tool chunked FILE`: parses the header the way the wasm binding does, from growing
//!   prefixes, and prints how many bytes it needed.
//!
//! Run: `cargo run -p coil-core --example gguf_tool -- inspect model.gguf`

use std::path::Path;
use std::process::exit;

use coil_core::gguf::inspect::{inspect_json, InspectOptions};
use coil_core::gguf::{GgufFile, GgufWriter, MappedGguf};
use coil_core::{ErrorCode, Result};

fn run(args: &[String]) -> Result<()> {
    match args {
        [cmd, file, rest @ ..] if cmd == "inspect" => {
            let head: i64 = rest.first().and_then(|s| s.parse().ok()).unwrap_or(16);
            let m = MappedGguf::open(Path::new(file))?;
            let opts = InspectOptions { array_head: usize::try_from(head).ok() };
            println!("{}", inspect_json(&m.file, &opts));
        }
        [cmd, file, rest @ ..] if cmd == "roundtrip" => {
            let m = MappedGguf::open(Path::new(file))?;
            let out = GgufWriter::from_file(&m.file, m.bytes())?.to_bytes()?;
            let same = out == m.bytes();
            println!("{file}: {} bytes in, {} bytes out, identical: {same}", m.bytes().len(), out.len());
            if let Some(o) = rest.first() {
                std::fs::write(o, &out)?;
            }
            if !same {
                exit(1);
            }
        }
        [cmd, file] if cmd == "chunked" => {
            let bytes = std::fs::read(file)?;
            let size = bytes.len() as u64;
            let mut have = 0usize;
            let mut rounds = 0;
            loop {
                rounds += 1;
                match GgufFile::parse(&bytes[..have], size) {
                    Ok(f) => {
                        println!(
                            "{file}: header parsed from the first {have} of {size} bytes in {rounds} rounds ({} keys, {} tensors)",
                            f.metadata.len(),
                            f.tensors.len()
                        );
                        break;
                    }
                    Err(e) if e.code == ErrorCode::GgufNeedMore => {
                        have = e.offset.map_or(bytes.len(), |o| o as usize).min(bytes.len());
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        _ => {
            eprintln!("usage: gguf_tool inspect FILE [ARRAY_HEAD] | roundtrip FILE [OUT] | chunked FILE");
            exit(2);
        }
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("error {}: {e}", e.code_str());
        exit(1);
    }
}
