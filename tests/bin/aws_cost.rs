//! Prints the AWS requests per step and the $/million steps of DESIGN.md §8, measured on
//! moto (see `baton_tests::cost`). Usage: `aws-cost [RUNS]` (default 200); or
//! `bash infra/aws-cost.sh`.

use baton_tests::cost;
use baton_tests::moto::Moto;
use std::process::ExitCode;

const BLOCKS: usize = 5;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let runs = match std::env::args().nth(1).map(|a| a.parse::<usize>()) {
        None => 200,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: aws-cost [RUNS]   (RUNS: a positive number of runs, default 200)");
            return ExitCode::from(2);
        }
    };
    let moto = match Moto::start() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("aws-cost: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = cost::measure(&moto, runs, BLOCKS).await;
    moto.stop();
    match result {
        Ok(m) => {
            print!("{}", m.report());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("aws-cost: {e}");
            ExitCode::FAILURE
        }
    }
}
