import Foundation
import Logging

/// Everything one attempt of a stage may use.
public struct StageContext: Sendable {
    public let pipelineName: String
    public let runID: UUID
    public let stageID: String
    public let attempt: Int
    public let logger: Logger
    public let variables: [String: VariableValue]
    public let asOf: CivilDate
    public let fullRefresh: Bool
    public let inputs: [String: StageOutput]
    public let connections: ConnectionProvider
    public let cancellation: Cancellation
    /// Counters that end up in the run summary and the lineage.
    public let metrics: StageMetrics
    /// The connection holding the lineage mirror, if the pipeline declares one.
    public var warehouseConnection: String? = nil
    /// Full or incremental, and the watermarks this run reads up to; nil
    /// when the pipeline tracks no extract.
    public var refresh: RefreshPlan? = nil
    /// In an incremental run, what this stage produced in the last run, as a
    /// stage of this run that persists it keeps it (its table, in the columns
    /// it writes). The refresh decision found that table written by the run
    /// the changes are counted from, and unchanged since. nil in a full
    /// refresh, or when no selected stage persists this one's output.
    public var previousOutput: PersistedRows? = nil
    /// Checks, in each warehouse write, that the run still holds its lock; nil without a run lock.
    public var runLock: RunLockCheck? = nil

    /// Records a table write in the lineage mirror, and the run's refresh
    /// state; call it inside the transaction that writes the data, so that
    /// all of them commit or none does.
    public func recordWrite(connectionName: String, _ connection: PGConnection, table: String, counts: WriteCounts) throws {
        guard connectionName == warehouseConnection else { return }
        try runLock?.verify(connection)
        try LineageMirror.recordWrite(connection, runID: runID, stageID: stageID, table: table, counts: counts)
        if let refresh {
            try RefreshStateStore.save(connection, pipeline: pipelineName, stageID: stageID, state: refresh.state(runID: runID),
                                       table: table)
        }
    }

    /// Whether the rows of this run are only those changed since the last one.
    public var isIncremental: Bool { refresh?.isIncremental ?? false }

    /// An input that must hold all its rows: an incremental result (the
    /// changed groups only) is refused with a message saying what to read instead.
    public func completeRelation(_ id: String) throws -> any Relation {
        let relation = try self.relation(id)
        if relation is PartialRelation {
            throw StageFailure.config("input '\(id)' holds only the groups changed since the last run (incremental refresh), not all rows; read the table its factUpsert writes instead (e.g. from: <that factUpsert stage>)")
        }
        return relation
    }

    public var scan: ScanContext { ScanContext(connections: connections, cancellation: cancellation, metrics: metrics) }

    public func relation(_ id: String) throws -> any Relation {
        switch inputs[id] {
        case .relation(let relation), .table(_, let relation): return relation
        default: throw StageFailure.missingInput("input '\(id)' did not produce rows")
        }
    }

    /// A lookup with every row (one read by key reads them all).
    public func lookup(_ id: String) throws -> Lookup {
        switch inputs[id] {
        case .lookup(let lookup): return lookup
        case .keyedLookup(let keyed): return try keyedRead(id) { try keyed.whole(scan) }
        default: throw StageFailure.missingInput("input '\(id)' did not produce a lookup")
        }
    }

    /// A lookup that answers for `keys` as the whole one would: one read by
    /// key holds only their rows (and those of its changed keys).
    public func lookup(_ id: String, keys: Set<Int64>) throws -> Lookup {
        guard case .keyedLookup(let keyed) = inputs[id] else { return try lookup(id) }
        return try keyedRead(id) { try keyed.rows(for: keys, scan) }
    }

    /// Which keys of a lookup input changed since the last run, without reading it.
    public func lookupChanges(_ id: String) throws -> LookupChanges {
        switch inputs[id] {
        case .lookup(let lookup): return lookup.changes
        case .keyedLookup(let keyed): return keyed.changes
        default: throw StageFailure.missingInput("input '\(id)' did not produce a lookup")
        }
    }

    /// A keyed lookup's rows are read in the consumer's stage; an error found
    /// then (a duplicate key, a column the input lacks) names the lookup stage.
    private func keyedRead(_ id: String, _ read: () throws -> Lookup) throws -> Lookup {
        do {
            return try read()
        } catch StageFailure.data(let text) {
            throw StageFailure.data("lookup '\(id)': \(text)")
        } catch StageFailure.config(let text) {
            throw StageFailure.config("lookup '\(id)': \(text)")
        }
    }
}

/// Counts a stage reports; thread-safe because a relation scanned by a
/// downstream stage reports into its producer's metrics.
public final class StageMetrics: @unchecked Sendable {
    private let lock = NSLock()
    private var _rowsIn = 0
    private var _rowsOut = 0
    private var _written: WriteCounts?
    private var _excluded: [String: Int] = [:]
    private var _datasets: [DatasetUse] = []
    private var progressHandler: (@Sendable (Int) -> Void)?

    public init(progress: (@Sendable (Int) -> Void)? = nil) { progressHandler = progress }

    public var rowsIn: Int { lock.withLock { _rowsIn } }
    public var rowsOut: Int { lock.withLock { _rowsOut } }
    public var written: WriteCounts? { lock.withLock { _written } }
    public var excluded: [String: Int] { lock.withLock { _excluded } }
    public var datasets: [DatasetUse] { lock.withLock { _datasets } }

    public func read(rows: Int) {
        let total = lock.withLock { _rowsIn += rows; return _rowsIn }
        progressHandler?(total)
    }

    public func produced(rows: Int) { lock.withLock { _rowsOut += rows } }

    public func wrote(_ counts: WriteCounts) { lock.withLock { _written = counts } }

    /// Rows left out by a data-quality rule, e.g. `call_without_pair`.
    public func exclude(_ rule: String, count: Int = 1) {
        guard count > 0 else { return }
        lock.withLock { _excluded[rule, default: 0] += count }
    }

    public func used(_ dataset: DatasetUse) { lock.withLock { _datasets.append(dataset) } }
}

/// Rows written to a warehouse table by one merge.
public struct WriteCounts: Sendable, Equatable, Codable {
    public var inserted = 0
    public var updated = 0
    public var deleted = 0
    public var unchanged = 0
    public init(inserted: Int = 0, updated: Int = 0, deleted: Int = 0, unchanged: Int = 0) {
        self.inserted = inserted
        self.updated = updated
        self.deleted = deleted
        self.unchanged = unchanged
    }
    public var changed: Int { inserted + updated + deleted }
}

/// A dataset a stage read or wrote, for lineage.
public struct DatasetUse: Sendable, Codable, Equatable {
    public enum Direction: String, Sendable, Codable { case input, output }
    public var direction: Direction
    /// `postgres://HOST:PORT`
    public var namespace: String
    /// `DATABASE.SCHEMA.TABLE`, or `DATABASE.query.<sha256 prefix>` for a query.
    public var name: String
    public var columns: [String: String]

    public init(direction: Direction, namespace: String, name: String, columns: [String: String]) {
        self.direction = direction
        self.namespace = namespace
        self.name = name
        self.columns = columns
    }
}
