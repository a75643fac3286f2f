import Foundation
import Logging

/// Decides at the start of a run whether it can be incremental: it reads
/// every extract's watermark and the state the writing stages committed last,
/// and falls back to a full refresh, saying why, whenever results could
/// otherwise differ from a rebuild's.
enum RefreshPlanner {
    /// Why every run of `pipeline` is a full refresh, with no state to keep;
    /// nil when runs can be incremental.
    static func alwaysFull(_ pipeline: PipelineDefinition) -> String? {
        guard pipeline.stages.contains(where: { ($0.implementation as? any WatermarkSource)?.isTracked == true }) else {
            return "no extract is tracked (incremental: on a pgExtract), so every run reads everything"
        }
        guard let warehouse = pipeline.warehouse, pipeline.connections[warehouse] != nil else {
            return "the pipeline names no defaults.warehouse to keep its refresh state in, so every run reads everything"
        }
        return nil
    }

    /// The stages whose watermarks the decision reads.
    static func watermarkSources(of pipeline: PipelineDefinition) -> [(id: String, source: any WatermarkSource)] {
        pipeline.stages.compactMap { stage in (stage.implementation as? any WatermarkSource).map { (id: stage.id, source: $0) } }
    }

    /// nil when every run is a full refresh (`alwaysFull` says why).
    static func plan(pipeline: PipelineDefinition, plan: ExecutionPlan, options: RunOptions,
                     cancellation: Cancellation, sessions: SessionPool? = nil, lockWaits: LockWaits? = nil) throws -> RefreshPlan? {
        let sources = watermarkSources(of: pipeline)
        if let why = alwaysFull(pipeline) {
            // Tracking declared with nowhere to keep its state deserves a warning; no tracking is a choice.
            if sources.contains(where: { $0.source.isTracked }) { options.logger.warning("tracked extracts: \(why)") }
            return nil
        }
        let warehouse = pipeline.warehouse!
        let connections = ConnectionProvider(pipelineName: pipeline.name, stageID: "refresh",
                                             definitions: pipeline.connections, cancellation: cancellation, pool: sessions,
                                             lockWaits: lockWaits)
        // The sources' watermarks and the warehouse's state are read at once.
        let (read, stored) = concurrently({
            Result { try watermarks(of: sources, connections: connections, logger: options.logger, cancellation: cancellation) }
        }, {
            Result {
                try connections.with(warehouse) { connection in
                    try RefreshStateStore.ensureSchema(connection)
                    return try RefreshStateStore.load(connection, pipeline: pipeline.name)
                }
            }
        })
        let (current, unreadable, problems, open) = try read.get()
        let search = KeyGapSearch(snapshots: open, connections: connections)
        let fingerprint = RefreshFingerprint(pipeline: pipeline)
        let states: [String: RefreshState]
        do {
            states = try stored.get()
        } catch {
            // A full refresh is always correct; the writing stages meet the
            // same warehouse with their retries and report what is wrong.
            options.logger.warning("cannot read the refresh state", metadata: ["error": .string("\(error)")])
            search.start(current: current, previous: nil, logger: options.logger)
            return RefreshPlan(mode: .full(reason: "the warehouse's refresh state could not be read"), current: current,
                               fingerprint: fingerprint, asOf: pipeline.asOf, gapSearch: search)
        }
        let writers = pipeline.stages.filter { plan.selected.contains($0.id) && !$0.implementation.tablesWritten.isEmpty }.map(\.id)
        var mode: RefreshPlan.Mode
        do {
            mode = try decide(asOf: pipeline.asOf, fullRefresh: options.fullRefresh, states: states, writers: writers,
                              fingerprint: fingerprint, current: current)
        } catch {
            search.abandon()
            throw error
        }
        if let first = unreadable.first, case .incremental = mode {
            mode = .full(reason: "the watermark of extract '\(first)' could not be read")
        }
        for (id, problem) in problems.sorted(by: { $0.key < $1.key }) {
            options.logger.warning("extract '\(id)': \(problem)")
        }
        if let (id, problem) = problems.min(by: { $0.key < $1.key }), case .incremental = mode {
            mode = .full(reason: "extract '\(id)': \(problem)")
        }
        let refresh = RefreshPlan(mode: mode, current: current, fingerprint: fingerprint, asOf: pipeline.asOf, gapSearch: search)
        search.start(current: current, previous: refresh.previous, logger: options.logger)
        return refresh
    }

    /// Every source's watermark, in one session and one snapshot per source
    /// connection; each read in a savepoint, so one failing leaves the others.
    /// A source that cannot be read is listed instead: its stage meets the
    /// same error when it runs and reports it there, with its retries; this
    /// run just cannot be incremental, and without this watermark the next
    /// one cannot either. Each session is returned with its transaction
    /// still open, for the key gap search in the same snapshot.
    private static func watermarks(of sources: [(id: String, source: any WatermarkSource)], connections: ConnectionProvider,
                                   logger: Logger, cancellation: Cancellation) throws
        -> ([String: Watermark], unreadable: [String], problems: [String: String], open: [KeyGapSearch.OpenSnapshot]) {
        var current: [String: Watermark] = [:]
        var unreadable: [String] = []
        var problems: [String: String] = [:]
        var open: [KeyGapSearch.OpenSnapshot] = []
        func failed(_ id: String, _ error: Error) {
            logger.warning("cannot read the watermark of an extract (its highest key, or for an untracked one a digest of its rows); the run is a full refresh, and the extract's stage reports the error", metadata: ["stage": .string(id), "error": .string("\(error)")])
            unreadable.append(id)
        }
        for (name, group) in Dictionary(grouping: sources, by: \.source.sourceConnection).sorted(by: { $0.key < $1.key }) {
            var session: PGConnection?
            do {
                let connection = try connections.borrow(name)
                session = connection
                try connection.execute(PGConnection.watermarkTransaction)
                for (id, source) in group {
                    try connection.execute("SAVEPOINT watermark")
                    do {
                        let watermark = try source.currentWatermark(connection)
                        current[id] = watermark
                        problems[id] = try source.watermarkProblem(watermark, connection)
                        try connection.execute("RELEASE SAVEPOINT watermark")
                    } catch where !cancellation.isCancelled && connection.isAlive {
                        try connection.execute("ROLLBACK TO SAVEPOINT watermark")
                        failed(id, error)
                    }
                }
                open.append(.init(connectionName: name, session: connection, sources: group))
            } catch {
                if let session {
                    _ = try? session.execute("ROLLBACK")
                    connections.giveBack(session, name, keep: false)
                }
                if cancellation.isCancelled {
                    KeyGapSearch(snapshots: open, connections: connections).abandon()
                    throw error
                }
                group.filter { current[$0.id] == nil && !unreadable.contains($0.id) }.forEach { failed($0.id, error) }
            }
        }
        return (current, unreadable, problems, open)
    }

    /// The decision itself, free of I/O so that every rule is pinned by a unit test.
    static func decide(asOf: CivilDate, fullRefresh: Bool, states: [String: RefreshState], writers: [String],
                       fingerprint: RefreshFingerprint, current watermarks: [String: Watermark]) throws -> RefreshPlan.Mode {
        // States of stages no longer in the pipeline do not count.
        let relevant = writers.compactMap { states[$0] }
        if let latest = relevant.map(\.asOf).max(), asOf < latest, !fullRefresh {
            throw RefreshRefused("as_of \(asOf) is before the last run's as_of \(latest); incremental runs only move forward. Run with --full-refresh to rebuild as of \(asOf)")
        }
        if fullRefresh { return .full(reason: "--full-refresh was given") }
        guard !states.isEmpty else { return .full(reason: "no earlier run has committed refresh state (first run)") }
        if let missing = writers.first(where: { states[$0] == nil }) {
            return .full(reason: "stage '\(missing)' has no committed refresh state")
        }
        guard var since = relevant.min(by: { $0.committedAt < $1.committedAt }) else {
            return .full(reason: "no stage writes to the warehouse")
        }
        // A stage that committed before the run's key gap search ended saved
        // none; a later one of the same run has them (the same list).
        for state in relevant where state.runID == since.runID && since.gaps.isEmpty { since.gaps = state.gaps }
        // A run that failed or was killed between two writes, or ran only
        // some stages (--select), left tables of different runs. Redoing only the changes since the oldest state is
        // not enough: a rollup's cells that the newer fact write moved rows
        // out of are no longer visible in its before-rows, and a newer state
        // may even be an earlier as_of (a half-finished --full-refresh).
        if let newer = relevant.first(where: { $0.runID != since.runID }),
           let lagging = writers.first(where: { states[$0]?.runID == since.runID }),
           let ahead = writers.first(where: { states[$0]?.runID == newer.runID }) {
            return .full(reason: "the writing stages are at different runs: stage '\(lagging)' at run \(since.shortRunID), stage '\(ahead)' at run \(newer.shortRunID) (a run failed or was stopped between its writes, or ran with --select)")
        }
        if let changed = fingerprint.difference(from: since.fingerprint) { return .full(reason: changed) }
        // The state describes the tables as the stages left them; one emptied
        // or replaced since would be written only where its groups changed.
        for writer in writers {
            if let state = states[writer], let changed = state.tablesChanged {
                return .full(reason: "stage '\(writer)', last written by run \(state.shortRunID): \(changed)")
            }
        }
        for (id, watermark) in watermarks.sorted(by: { $0.key < $1.key }) {
            guard let before = since.watermarks[id] else {
                return .full(reason: "extract '\(id)' has no watermark from the last run")
            }
            switch (before, watermark) {
            case let (.content(old), .content(new)) where old != new:
                return .full(reason: "the content of extract '\(id)' changed since the last run (untracked extracts are compared whole)")
            case let (.tracked(oldKey, oldHigh, _), .tracked(newKey, newHigh, _)):
                if oldKey != newKey { return .full(reason: "extract '\(id)' now tracks '\(newKey)' instead of '\(oldKey)'") }
                if let oldHigh, (newHigh ?? Int64.min) < oldHigh {
                    return .full(reason: "extract '\(id)': the highest \(newKey) went down from \(oldHigh) to \(newHigh.map(String.init) ?? "none"), so the source was reloaded")
                }
            case (.content, .tracked), (.tracked, .content):
                return .full(reason: "extract '\(id)' changed between tracked and untracked")
            default:
                continue
            }
        }
        return .incremental(since: since)
    }
}
