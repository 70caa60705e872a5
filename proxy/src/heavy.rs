//! Work on one very large request (parsing an 8 MB prompt, counting its tokens, writing its
//! canonical form) takes tens to hundreds of milliseconds: done in place on an async worker it
//! would hold up every small request sharing that worker. Above [`LARGE_BODY`] such work runs
//! with the worker handed over to the runtime's other tasks first.

/// Bodies above this many bytes are worked on off the async workers' queue.
pub const LARGE_BODY: usize = 256 * 1024;

/// Runs `work` for a body of `size` bytes: in place when it is small (or the runtime has a
/// single thread, which cannot hand its tasks over), else with this worker's other tasks moved
/// to another thread while it runs.
pub fn for_body<T>(size: usize, work: impl FnOnce() -> T) -> T {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if size > LARGE_BODY && multi_thread {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}
