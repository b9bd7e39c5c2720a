//! Per-task work on every core. Reading thousands of small task records is
//! a few system calls each; `status` and listing spread them over up to
//! four threads, and stay on one thread when there is little to do.

/// `f` applied to every item, in order, on up to four threads once there
/// are more than `min_chunk` items.
pub fn map<T: Sync, U: Send>(items: &[T], min_chunk: usize, f: impl Fn(&T) -> U + Sync) -> Vec<U> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let chunk = items.len().div_ceil(workers).max(min_chunk);
    if items.len() <= chunk {
        return items.iter().map(f).collect();
    }
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(f).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("worker thread panicked"))
            .collect()
    })
}
