//! Keeps the AWS requests of a step from growing: the 5-block transform chain of DESIGN.md §8
//! runs through the engine on DynamoDB + SQS (moto), and every count per step and per run
//! start must stay within what `bash infra/aws-cost.sh` measured. A change that adds a
//! request to the step path fails here; lower the bounds when the engine gets cheaper.

use baton::metrics::Op;
use baton_tests::cost::{self, STEP_FUNCTIONS_PER_MILLION};
use baton_tests::moto::moto;

const RUNS: usize = 10;

/// The request counters are process-wide: one measure at a time (`cargo test` runs tests on
/// threads of one process; nextest, in processes of their own).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const BLOCKS: usize = 5;

/// Per step (worker side), measured: claim and commit (one UpdateItem each for a linear
/// hand-over), one BatchGetItem of the run item, the step and the step its template names
/// (the starter names none, hence 2.6 read units: each item is at least one); the run's last
/// step commits and completes the run in one transaction (run item, step, index, event),
/// hence the fifths.
const STEP_BOUNDS: &[(Op, f64)] = &[
    (Op::DdbGetItem, 0.0),
    (Op::DdbPutItem, 0.0),
    (Op::DdbUpdateItem, 1.8),
    (Op::DdbDeleteItem, 0.0),
    (Op::DdbTransactWriteItems, 0.2),
    (Op::DdbTransactItems, 0.8),
    (Op::DdbQuery, 0.0),
    (Op::DdbBatchGetItem, 1.0),
    (Op::DdbWriteUnits, 3.4),
    (Op::DdbReadUnits, 2.6),
    (Op::SqsSendMessage, 0.0),
    (Op::SqsSendMessageBatch, 0.8),
    (Op::SqsDeleteMessage, 0.0),
    (Op::SqsChangeMessageVisibility, 0.0),
];

/// DESIGN.md §8: AWS cost per million steps.
const TARGET_PER_MILLION_STEPS: f64 = 3.0;

/// Per run start (API side: key lookup, rate-limit counter, run creation, first message).
const START_BOUNDS: &[(Op, f64)] = &[
    (Op::DdbGetItem, 2.0),
    (Op::DdbUpdateItem, 1.0),
    (Op::DdbTransactWriteItems, 1.0),
    (Op::DdbQuery, 0.0),
    (Op::DdbTransactItems, 2.0),
    (Op::DdbWriteUnits, 5.0),
    (Op::DdbReadUnits, 2.0),
    (Op::SqsSendMessage, 1.0),
    (Op::SqsSendMessageBatch, 0.0),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_step_stay_within_the_measured_numbers() {
    let _serial = SERIAL.lock().await;
    let m = cost::measure(moto(), RUNS, BLOCKS).await.unwrap();
    let report = m.report();
    println!("{report}");
    for &(op, bound) in STEP_BOUNDS {
        let got = m.per_step(op);
        assert!(got <= bound + 1e-9, "{} per step: {got:.3} > {bound} (measured bound)\n{report}", op.name());
    }
    for &(op, bound) in START_BOUNDS {
        let got = m.per_start(op);
        assert!(got <= bound + 1e-9, "{} per run start: {got:.3} > {bound} (measured bound)\n{report}", op.name());
    }
    // Receives and batch deletes depend on how messages share batches, not on the engine:
    // at worst one of each per step, plus the final empty poll.
    let polls = m.per_step(Op::SqsReceiveMessage);
    assert!(polls <= 1.0 + 2.0 / m.steps_total() as f64, "receives per step: {polls:.3}\n{report}");
    assert!(m.per_step(Op::SqsDeleteMessageBatch) <= 1.0);
    assert_eq!(m.invocations as f64, m.per_step(Op::SqsDeleteMessageBatch) * m.steps_total() as f64);
    assert!(m.all_in_cost().total() < STEP_FUNCTIONS_PER_MILLION, "{report}");
    assert!(m.step_cost().total() <= TARGET_PER_MILLION_STEPS, "{report}");
    // DESIGN.md §8: at most two DynamoDB writes and one read per step.
    let writes = m.per_step(Op::DdbUpdateItem) + m.per_step(Op::DdbPutItem) + m.per_step(Op::DdbTransactWriteItems);
    assert!(writes <= 2.0 + 1e-9, "DynamoDB writes per step: {writes:.3}\n{report}");
    let reads = m.per_step(Op::DdbQuery) + m.per_step(Op::DdbGetItem) + m.per_step(Op::DdbBatchGetItem);
    assert!(reads <= 1.0 + 1e-9, "DynamoDB reads per step: {reads:.3}\n{report}");
}

/// Per agent step (worker side), measured on a chain of five agent steps: the transform
/// chain's claim, commit and reads, plus the provider record (one GetItem), the step's
/// journal (one Query, empty on a first delivery) and the answer journaled before the step
/// commits (one PutItem), so that a redelivery never calls the model again.
const AGENT_STEP_BOUNDS: &[(Op, f64)] = &[
    (Op::DdbGetItem, 1.0),
    (Op::DdbPutItem, 1.0),
    (Op::DdbUpdateItem, 1.8),
    (Op::DdbDeleteItem, 0.0),
    (Op::DdbTransactWriteItems, 0.2),
    (Op::DdbQuery, 1.0),
    (Op::DdbBatchGetItem, 1.0),
    (Op::DdbWriteUnits, 4.4),
    (Op::DdbReadUnits, 4.8),
    (Op::SqsSendMessage, 0.0),
    (Op::SqsSendMessageBatch, 0.8),
];

/// Measured: $3.80 per million agent steps of AWS requests (with 0.1 worker invocations per
/// step; batching varies a little), besides the model's price and the worker's wait on it
/// ([`cost::lambda_per_model_second`]).
const AGENT_STEP_DOLLARS: f64 = 3.85;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_step_adds_only_the_provider_read_and_the_journal() {
    let _serial = SERIAL.lock().await;
    let m = cost::measure_agent(moto(), RUNS).await.unwrap();
    let report = m.report();
    println!("{report}");
    for &(op, bound) in AGENT_STEP_BOUNDS {
        let got = m.per_step(op);
        assert!(got <= bound + 1e-9, "{} per agent step: {got:.3} > {bound} (measured bound)\n{report}", op.name());
    }
    assert!(m.step_cost().total() <= AGENT_STEP_DOLLARS, "{report}");
}
