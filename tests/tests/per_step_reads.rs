//! A step reads the run item, its own step and the outputs its templates name, not the
//! whole run: on DynamoDB (moto), the reads of step 1 and step 200 of a 200-step chain with
//! 10 KB outputs are the same within 10 %, by the adapter's request and byte counters.

use baton_tests::cost::{StepReads, reads_per_step};
use baton_tests::moto::moto;

const STEPS: usize = 200;
const OUTPUT_BYTES: usize = 10 * 1024;

fn within_ten_percent(a: StepReads, b: StepReads) -> bool {
    let close = |x: u64, y: u64| (x as f64 - y as f64).abs() <= 0.1 * x.max(y) as f64;
    a.requests == b.requests && close(a.units, b.units) && close(a.bytes, b.bytes)
}

fn table(reads: &[(String, StepReads)]) -> String {
    reads.iter().map(|(k, r)| format!("{k}: {r:?}\n")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_200_reads_what_step_1_reads() {
    let reads = reads_per_step(moto(), STEPS, OUTPUT_BYTES, false).await.unwrap();
    let (first, last) = (reads[0].1, reads[STEPS - 1].1);
    println!("input only: step 1 {first:?}, step 2 {:?}, step 200 {last:?}", reads[1].1);
    assert_eq!((reads[0].0.as_str(), reads[STEPS - 1].0.as_str()), ("start", "t199"));
    assert!(within_ten_percent(first, last), "step 1 {first:?} vs step 200 {last:?}\n{}", table(&reads));
    // One request per step, and about the run item's 10 KB (the input the templates read),
    // not the 2 MB of outputs before it.
    assert!(reads.iter().all(|(_, r)| r.requests == 1), "{}", table(&reads));
    assert!(last.bytes < 2 * OUTPUT_BYTES as u64, "{last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_naming_its_predecessor_reads_that_output_and_no_other() {
    let reads = reads_per_step(moto(), STEPS, OUTPUT_BYTES, true).await.unwrap();
    // The starter names no step; every transform reads one output more: its predecessor's.
    let (second, last) = (reads[1].1, reads[STEPS - 1].1);
    println!("predecessor named: step 1 {:?}, step 2 {second:?}, step 200 {last:?}", reads[0].1);
    assert!(within_ten_percent(second, last), "step 2 {second:?} vs step 200 {last:?}\n{}", table(&reads));
    assert!(reads.iter().all(|(_, r)| r.requests == 1), "{}", table(&reads));
    assert!(last.bytes < 3 * OUTPUT_BYTES as u64, "{last:?}");
    assert!(last.bytes > 2 * OUTPUT_BYTES as u64, "the input and the predecessor's output: {last:?}");
}
