import Foundation

/// A bounded hand-off of batches from producer threads (reading and decoding
/// COPY data) to the consuming stage, so that the server keeps sending,
/// the producers keep decoding and the consumer keeps aggregating at once.
final class BatchPipe: @unchecked Sendable {
    private let condition = NSCondition()
    private var queue: [Batch] = []
    private var running: Int
    private var failure: Error?
    private var abandoned = false
    private let capacity: Int

    init(capacity: Int, producers: Int = 1) {
        self.capacity = capacity
        running = producers
    }

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

    /// Producer side: this producer has no more batches; `error` if it failed.
    func finish(_ error: Error?) {
        condition.lock()
        running -= 1
        if let error, failure == nil { failure = error }
        condition.broadcast()
        condition.unlock()
    }

    /// Consumer side: the next batch, nil once every producer has finished;
    /// rethrows the first producer error as soon as it happens.
    func take() throws -> Batch? {
        condition.lock()
        defer { condition.unlock() }
        while queue.isEmpty && running > 0 && failure == nil { condition.wait() }
        if let failure { throw failure }
        if !queue.isEmpty {
            let batch = queue.removeFirst()
            condition.broadcast()
            return batch
        }
        return nil
    }

    /// Consumer side: stop the producers (after an error).
    func abandon() {
        condition.lock()
        abandoned = true
        queue.removeAll()
        condition.broadcast()
        condition.unlock()
    }

    /// Runs `produce` on a thread of its own, feeding this pipe: its batches
    /// are put (it stops once the consumer has given up), and its end or
    /// error is reported with `finish`.
    func startProducer(_ produce: @escaping @Sendable (_ emit: (Batch) throws -> Void) throws -> Void) {
        let thread = Thread { [self] in
            do {
                try produce { batch in
                    guard put(batch) else { throw PipeAbandoned() }
                }
                finish(nil)
            } catch {
                finish(error)
            }
        }
        thread.stackSize = 8 << 20
        thread.start()
    }

    /// Waits until every producer has finished.
    func waitForProducers() {
        condition.lock()
        while running > 0 { condition.wait() }
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
        try pipelined(capacity: capacity, producers: [produce], interrupt: interrupt, body)
    }

    /// Runs each producer on a thread of its own and hands all their batches
    /// to `body` on the calling thread, in the order they arrive. The first
    /// failure (of a producer or of `body`) stops the others through `interrupt`.
    public static func pipelined(capacity: Int = 4,
                                 producers: [@Sendable (_ emit: (Batch) throws -> Void) throws -> Void],
                                 interrupt: @escaping @Sendable () -> Void,
                                 _ body: (Batch) throws -> Void) throws {
        let pipe = BatchPipe(capacity: capacity * producers.count, producers: producers.count)
        producers.forEach(pipe.startProducer)
        do {
            while let batch = try pipe.take() { try body(batch) }
        } catch {
            pipe.abandon()
            interrupt()
            pipe.waitForProducers()
            throw error
        }
    }
}

/// The consumer stopped reading; the producers unwind quietly.
struct PipeAbandoned: Error {}
