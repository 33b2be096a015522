//! Prints the AWS requests per step and the $/million steps of DESIGN.md §8, measured on
//! moto (see `baton_tests::cost`), for the 5-block transform chain and for an agent step. Usage: `aws-cost [RUNS]` (default 200); or
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
    let chain = cost::measure(&moto, runs, BLOCKS).await;
    let agent = match chain {
        Ok(_) => Some(cost::measure_agent(&moto, runs.div_ceil(BLOCKS)).await),
        Err(_) => None,
    };
    moto.stop();
    match chain.and_then(|c| agent.transpose().map(|a| (c, a))) {
        Ok((c, a)) => {
            print!("{}", c.report());
            if let Some(a) = a {
                println!("\nOne agent step per run (a scripted OpenAI-compatible provider on loopback):\n");
                print!("{}", a.report());
                println!(
                    "plus the model's own price, and ${:.3} per million steps for each second the worker waits on the model",
                    cost::lambda_per_model_second()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("aws-cost: {e}");
            ExitCode::FAILURE
        }
    }
}
