//! `callbridge`: see `cli` for the commands. Everything lives in the library.

/// mimalloc instead of glibc's malloc: see `Cargo.toml` for the measurement.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(callbridge::cli::main());
}
