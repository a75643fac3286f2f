import Foundation

/// Runs two blocking pieces of work at once (each may wait on a server) and
/// returns both results when both have finished.
func concurrently<A, B>(_ first: () -> A, _ second: () -> B) -> (A, B) {
    withoutActuallyEscaping(first) { first in
        withoutActuallyEscaping(second) { second in
            // Each result is written by one iteration only, and read after both.
            nonisolated(unsafe) var a: A?
            nonisolated(unsafe) var b: B?
            nonisolated(unsafe) let work = (first, second)
            DispatchQueue.concurrentPerform(iterations: 2) { index in
                if index == 0 { a = work.0() } else { b = work.1() }
            }
            return (a!, b!)
        }
    }
}
