//! The `palisade` binary.

/// mimalloc instead of the system allocator: a request allocates a few dozen small objects
/// (header values, extension maps, boxed futures and bodies), and glibc's malloc/free pair costs
/// several times mimalloc's (docs/benchmarks.md, "Instructions per request").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    palisade_server::cli::main()
}
