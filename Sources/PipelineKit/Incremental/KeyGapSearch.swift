import Foundation
import Logging

/// Searches the tracked extracts' key gaps while the run's first stages
/// start, each in the transaction its watermark was read in, which stays open
/// for it: the gaps must be those of the watermark's snapshot. A writing stage
/// saves them with the run's refresh state once the search has ended; one
/// that commits before (a lookup written first thing) saves none, and the
/// next run takes them from the run's later writes.
public final class KeyGapSearch: @unchecked Sendable {
    /// A source session whose watermark transaction is still open, and the extracts read in it.
    struct OpenSnapshot {
        let connectionName: String
        let session: PGConnection
        let sources: [(id: String, source: any WatermarkSource)]
    }

    private let snapshots: [OpenSnapshot]
    private let connections: ConnectionProvider
    private let condition = NSCondition()
    private var found: [String: KeyGaps]?

    init(snapshots: [OpenSnapshot], connections: ConnectionProvider) {
        self.snapshots = snapshots
        self.connections = connections
    }

    /// Starts the search of every tracked extract whose watermark is in
    /// `current`; `previous` is the state the run is incremental from, if it is.
    func start(current: [String: Watermark], previous: RefreshState?, logger: Logger) {
        let snapshots = self.snapshots
        let connections = self.connections
        Thread { [self] in
            var gaps: [String: KeyGaps] = [:]
            for snapshot in snapshots {
                let session = snapshot.session
                for (id, source) in snapshot.sources where source.isTracked {
                    // An aborted run commits no state: what is left is not searched.
                    guard !connections.cancellation.isCancelled else { break }
                    guard let watermark = current[id] else { continue }
                    let before = previous.flatMap { state in state.watermarks[id].flatMap { mark in state.gaps[id].map { (mark, $0) } } }
                    do {
                        try session.execute("SAVEPOINT gaps")
                        gaps[id] = try source.keyGaps(below: watermark, previous: before, session)
                        try session.execute("RELEASE SAVEPOINT gaps")
                    } catch {
                        // Costs the next run time, not rows: it re-checks the whole look-back.
                        if !connections.cancellation.isCancelled { logger.warning("cannot list the keys missing below an extract's watermark; the next run re-checks its whole look-back instead", metadata: ["stage": .string(id), "error": .string("\(error)")]) }
                        if (try? session.execute("ROLLBACK TO SAVEPOINT gaps")) == nil { break }
                    }
                }
                let ended = (try? session.execute("COMMIT")) != nil
                connections.giveBack(session, snapshot.connectionName, keep: ended)
            }
            finish(gaps)
        }.start()
    }

    /// Ends the open transactions without searching: the run does not start.
    func abandon() {
        for snapshot in snapshots {
            _ = try? snapshot.session.execute("ROLLBACK")
            connections.giveBack(snapshot.session, snapshot.connectionName, keep: false)
        }
        finish([:])
    }

    /// The gaps found, by extract; nil while the search goes on.
    public var result: [String: KeyGaps]? {
        condition.lock()
        defer { condition.unlock() }
        return found
    }

    /// The gaps found, once the search has ended.
    public func waitForResult() -> [String: KeyGaps] {
        condition.lock()
        defer { condition.unlock() }
        while found == nil { condition.wait() }
        return found!
    }

    private func finish(_ gaps: [String: KeyGaps]) {
        condition.lock()
        found = gaps
        condition.broadcast()
        condition.unlock()
    }
}
