//! `extractor`: the text of one untrusted file, in a process of its own.
//!
//! Reads the file from stdin, writes its text (UTF-8) to stdout. It is the only program
//! of Threadline that runs a parser of uploaded files; command-api runs it as a child
//! process with operating-system limits (address space, CPU seconds, no core, no files,
//! no network where the kernel allows; see `commands::intake::sandbox`) and kills it at
//! a wall-clock deadline, so whatever a file does here (a stack overflow, an allocation
//! the limits refuse, a loop) ends this process only.
//!
//!     extractor pdf < file.pdf > file.txt
//!
//! Exit status, the protocol with `commands::intake`:
//! - 0: the text is on stdout;
//! - 3: the file cannot be read (malformed): a short reason on stderr, for the log only;
//! - 2: wrong usage;
//! - anything else, or a signal: the file defeated the limits (too complex).

use std::io::{Read, Write};
use std::process::ExitCode;

/// The file is malformed: the parser refused it, or panicked on it.
const UNREADABLE: u8 = 3;
const USAGE: u8 = 2;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (Some("pdf"), None) => {}
        _ => {
            eprintln!("usage: extractor pdf < file > text");
            return ExitCode::from(USAGE);
        }
    }
    let mut bytes = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut bytes) {
        eprintln!("reading stdin: {e}");
        return ExitCode::from(USAGE);
    }
    // A parser panic is a malformed file like any other. Stack overflows and failed
    // allocations abort the process instead: the parent counts those as too complex.
    let text = match std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem(&bytes)) {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => {
            eprintln!("{e}");
            return ExitCode::from(UNREADABLE);
        }
        Err(_) => {
            eprintln!("the parser panicked");
            return ExitCode::from(UNREADABLE);
        }
    };
    let mut out = std::io::stdout().lock();
    if out
        .write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        // The parent stopped reading (its output cap): nothing more to do.
        return ExitCode::from(USAGE);
    }
    ExitCode::SUCCESS
}
