//! `callbridge`: see `cli` for the commands. Everything lives in the library.

fn main() {
    std::process::exit(callbridge::cli::main());
}
