import Foundation

/// A bounded hand-off of batches from a producer thread (reading and decoding
/// COPY data) to the consuming stage, so that the server keeps sending,
/// the producer keeps decoding and the consumer keeps aggregating at once.
final class BatchPipe: @unchecked Sendable {
    private let condition = NSCondition()
    private var queue: [Batch] = []
    private var finished = false
    private var failure: Error?
    private var abandoned = false
    private let capacity: Int

    init(capacity: Int) { self.capacity = capacity }

    /// Producer side: blocks while the pipe is full. Returns false when the
    /// consumer has given up, so the producer can stop.
    func put(_ batch: Batch) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while queue.count >= capacity && !abandoned { condition.wait() }
        guard !abandoned else { return false }
        queue.append(batch)
        condition.broadcast()
        return true
    }

    /// Producer side: no more batches; `error` if the producer failed.
    func finish(_ error: Error?) {
        condition.lock()
        finished = true
        failure = error
        condition.broadcast()
        condition.unlock()
    }

    /// Consumer side: the next batch, nil at the end; rethrows the producer's error.
    func take() throws -> Batch? {
        condition.lock()
        defer { condition.unlock() }
        while queue.isEmpty && !finished { condition.wait() }
        if !queue.isEmpty {
            let batch = queue.removeFirst()
            condition.broadcast()
            return batch
        }
        if let failure { throw failure }
        return nil
    }

    /// Consumer side: stop the producer (after a consumer error).
    func abandon() {
        condition.lock()
        abandoned = true
        queue.removeAll()
        condition.broadcast()
        condition.unlock()
    }

    /// Waits until the producer has finished.
    func waitForProducer() {
        condition.lock()
        while !finished { condition.wait() }
        condition.unlock()
    }
}

extension Relation {
    /// Runs `produce` on a thread of its own and hands its batches to `body`
    /// on the calling thread as they come.
    public static func pipelined(capacity: Int = 4,
                          produce: @escaping @Sendable (_ emit: (Batch) throws -> Void) throws -> Void,
                          interrupt: @escaping @Sendable () -> Void,
                          _ body: (Batch) throws -> Void) throws {
        let pipe = BatchPipe(capacity: capacity)
        let thread = Thread {
            do {
                try produce { batch in
                    guard pipe.put(batch) else { throw PipeAbandoned() }
                }
                pipe.finish(nil)
            } catch {
                pipe.finish(error)
            }
        }
        thread.stackSize = 8 << 20
        thread.start()
        do {
            while let batch = try pipe.take() { try body(batch) }
        } catch {
            pipe.abandon()
            interrupt()
            pipe.waitForProducer()
            throw error
        }
    }
}

/// The consumer stopped reading; the producer unwinds quietly.
struct PipeAbandoned: Error {}
