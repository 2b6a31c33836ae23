//! `minigun [OPTIONS] MODULE:APP`: parse the command line, then hand over to the arbiter.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match minigun::cli::parse(&args) {
        Ok(minigun::cli::Command::Print(text)) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Ok(minigun::cli::Command::Run(settings)) if settings.print_config => {
            print!("{}", settings.describe());
            ExitCode::SUCCESS
        }
        Ok(minigun::cli::Command::Run(settings)) => {
            let code = minigun::arbiter::run(*settings);
            // As a shell sees exit(2): the low byte, so sys.exit(-1) in a hook is 255.
            ExitCode::from((code & 0xff) as u8)
        }
        Err(e) => {
            // argparse's shape, as gunicorn prints it: one line naming the problem, status 2.
            eprintln!("minigun: error: {e}");
            ExitCode::from(2)
        }
    }
}
