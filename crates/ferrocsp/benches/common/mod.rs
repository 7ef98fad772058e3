//! Command-line arguments shared by the benchmarks: a size flag, `--runs K`, `--only NAME`.

/// Parsed arguments: `size` is the value of the benchmark's size flag (`--n`, `--cycles`).
pub struct Args {
    pub size: u64,
    pub runs: usize,
    pub only: Option<String>,
}

/// Parses `std::env::args()`; exits with a usage message (status 2) on bad input.
pub fn parse_args(prog: &str, size_flag: &str, default_size: u64, only_help: &str) -> Args {
    let usage = |problem: &str| -> ! {
        if !problem.is_empty() {
            eprintln!("{prog}: {problem}");
        }
        eprintln!("usage: {prog} [{size_flag} N] [--runs K] [--only {only_help}]");
        std::process::exit(if problem.is_empty() { 0 } else { 2 })
    };
    let mut args = Args { size: default_size, runs: 5, only: None };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value =
            |flag: &str| it.next().unwrap_or_else(|| usage(&format!("{flag} needs a value")));
        match arg.as_str() {
            f if f == size_flag => {
                args.size = value(f)
                    .parse()
                    .unwrap_or_else(|_| usage(&format!("{f} takes a positive integer")));
            }
            "--runs" => {
                args.runs = value("--runs")
                    .parse()
                    .unwrap_or_else(|_| usage("--runs takes a positive integer"));
            }
            "--only" => args.only = Some(value("--only")),
            // `cargo bench` passes --bench; libtest-style filters are not used here.
            "--bench" => {}
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    if args.size == 0 || args.runs == 0 {
        usage(&format!("{size_flag} and --runs must be at least 1"));
    }
    args
}
