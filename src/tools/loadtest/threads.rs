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
use tokio_util::task::LocalPoolHandle;

/// Runs `task(i)` for every `i` in `0..count`, dealt round-robin over one current-thread
/// runtime per core, and returns the outputs in `i` order. The threads stop when it returns.
pub(super) async fn spread<T, F, Fut>(count: usize, task: F) -> anyhow::Result<Vec<T>>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    if count == 0 {
        return Ok(Vec::new());
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, NonZeroUsize::get)
        .min(count);
    let pool = LocalPoolHandle::new(threads);
    let running: Vec<_> = (0..count)
        .map(|i| {
            let task = task.clone();
            pool.spawn_pinned_by_idx(move || task(i), i % threads)
        })
        .collect();
    let mut outputs = Vec::with_capacity(count);
    for output in running {
        outputs.push(output.await.context("a load client failed")?);
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

    #[tokio::test]
    async fn tasks_are_dealt_over_the_threads_in_turn() {
        let threads = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        let names = spread(threads * 3, |_| async { std::thread::current().id() })
            .await
            .expect("spread");
        for (i, name) in names.iter().enumerate() {
            assert_eq!(*name, names[i % threads], "task {i}");
            assert_ne!(
                *name,
                std::thread::current().id(),
                "task {i} ran on the caller"
            );
        }
        let distinct: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(distinct.len(), threads);
    }
}
