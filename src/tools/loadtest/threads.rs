//! Where the clients run: one single-threaded Tokio runtime per core, as wrk runs its threads.
//!
//! On the work-stealing runtime a client's task and its connection's task could run on
//! different threads, and every hand-over between them could wake a parked thread. On one
//! machine with the server under test, that CPU is taken from the server
//! (`docs/load-testing.md` has the figures). Here a client and its connection stay on one
//! thread for the whole run.

use std::future::Future;
use std::num::NonZeroUsize;

use anyhow::Context as _;

/// Runs `task(i)` for every `i` in `0..count`, dealt round-robin over one current-thread
/// runtime per core (at most `count` of them), and returns the outputs in `i` order.
pub(super) async fn spread<T, F, Fut>(count: usize, task: F) -> anyhow::Result<Vec<T>>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    if count == 0 {
        return Ok(Vec::new());
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(count);
    // Every runtime before any thread, so a failure here leaves no load running.
    let runtimes = (0..threads)
        .map(|_| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting a load thread's runtime")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut handles = Vec::with_capacity(threads);
    for (thread, runtime) in runtimes.into_iter().enumerate() {
        let task = task.clone();
        let handle = std::thread::Builder::new()
            .name(format!("loadtest-{thread}"))
            .spawn(move || {
                runtime.block_on(async move {
                    let mine: Vec<_> = (thread..count)
                        .step_by(threads)
                        .map(|i| tokio::spawn(task(i)))
                        .collect();
                    let mut outputs = Vec::with_capacity(mine.len());
                    for output in mine {
                        outputs.push(output.await);
                    }
                    outputs
                })
            })
            .context("starting a load thread")?;
        handles.push(handle);
    }
    // Joining blocks: off the caller's runtime, so its own tasks (progress, /metrics) go on.
    let per_thread = tokio::task::spawn_blocking(move || {
        handles
            .into_iter()
            .map(|handle| handle.join())
            .collect::<Vec<_>>()
    })
    .await?;
    let mut per_thread = per_thread
        .into_iter()
        .map(|joined| {
            joined
                .map_err(|_| anyhow::anyhow!("a load thread panicked"))
                .map(Vec::into_iter)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // Deal the outputs back in the order they were dealt out.
    let mut outputs = Vec::with_capacity(count);
    for i in 0..count {
        let output = per_thread[i % threads]
            .next()
            .context("a load thread returned fewer outputs than it was dealt")??;
        outputs.push(output);
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_task_runs_once_and_outputs_come_back_in_order() {
        for count in [0, 1, 2, 3, 7, 64] {
            let outputs = spread(count, |i| async move { i * 10 })
                .await
                .expect("spread");
            assert_eq!(outputs, (0..count).map(|i| i * 10).collect::<Vec<_>>());
        }
    }

    #[tokio::test]
    async fn a_panicking_task_is_an_error_not_a_hang() {
        let failed = spread(4, |i| async move {
            assert_ne!(i, 2, "task 2 fails");
            i
        })
        .await;
        assert!(failed.is_err());
    }
}
