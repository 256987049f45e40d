fn main() {
    std::process::exit(mape::cli::run(std::env::args_os()));
}
