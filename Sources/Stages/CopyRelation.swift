import Foundation
import PipelineKit

/// Rows of a SELECT, streamed by COPY each time it is scanned.
///
/// With a `split`, a whole-table read runs as several COPYs at once, each
/// over one range of the table's blocks and all in one shared snapshot:
/// a single COPY keeps one server process busy, which is the bottleneck
/// of a large extract on a machine with cores to spare.
struct CopyRelation: KeyRestrictable {
    let connection: String
    let sql: String
    let schema: [Field]
    let batchRows: Int
    var split: BlockSplit? = nil
    /// The table the rows come from, locked (ACCESS SHARE) before the read's
    /// snapshot is taken: TRUNCATE is not MVCC-safe, and a read whose snapshot
    /// predates a TRUNCATE that commits before the read reaches the table
    /// finds it empty, a state no transaction committed. nil where pgExtract
    /// does not lock (see PgExtract.run): a query, a view, a partitioned,
    /// materialized or foreign table, or a reader granted some columns only.
    var lockTable: String? = nil
    /// The extract stage whose SELECT this is: a server error met while a
    /// downstream stage reads it names the extract, where the SQL is written.
    var source: String? = nil

    /// A table read in `streams` block ranges: `SELECT columns FROM table WHERE predicate`.
    struct BlockSplit {
        let table: String
        let columns: String
        let predicate: String?
        let streams: Int

        /// The SELECT of one stream: a TID range scan over its blocks. The last
        /// range is open-ended, so the ranges cover the table whatever its size.
        func select(stream: Int, blocks: Int64) -> String {
            let first = blocks * Int64(stream) / Int64(streams), next = blocks * Int64(stream + 1) / Int64(streams)
            var conditions: [String] = []
            if stream > 0 { conditions.append("ctid >= '(\(first),0)'::tid") }
            if stream < streams - 1 { conditions.append("ctid < '(\(next),0)'::tid") }
            if let predicate { conditions.append("(\(predicate))") }
            return "SELECT \(columns) FROM \(SQL.qualified(table))"
                + (conditions.isEmpty ? "" : " WHERE " + conditions.joined(separator: " AND "))
        }
    }

    /// The same rows for some groups only, selected by the server (an index on the key columns makes it cheap).
    func restricted(to scope: KeyScope) -> any Relation {
        filtered(scope.sqlPredicate(qualifier: "whole"))
    }

    /// As `restricted(to:)`, also selecting the rows by the first key column
    /// alone. That condition is implied, but it lets the server probe an
    /// index on that column only (experience by user_id: 2 ms instead of a
    /// 15 ms scan of the table for 483 pairs); where an index covers both
    /// columns it costs a little (calls: 15 ms instead of 11).
    func restrictedByFirstColumnToo(to scope: KeyScope) -> any Relation {
        guard scope.columns.count > 1 else { return restricted(to: scope) }
        let firsts = KeyScope(columns: [scope.columns[0]], first: Array(Set(scope.first)).sorted())
        return filtered(firsts.sqlPredicate(qualifier: "whole") + " AND " + scope.sqlPredicate(qualifier: "whole"))
    }

    func restricted(to scope: KeyScope, before micros: Int64, in column: String) -> any Relation {
        filtered(scope.sqlPredicate(qualifier: "whole") + " AND whole.\(SQL.ident(column)) < '\(PGTime.format(micros: micros))'::timestamptz")
    }

    /// One row, one bigint column `rows`: how many rows the relation has, up
    /// to `limit` (the server stops reading there).
    func counted(upTo limit: Int) -> CopyRelation {
        CopyRelation(connection: connection, sql: "SELECT count(*) AS rows FROM (SELECT 1 FROM (\(sql)) AS whole LIMIT \(limit)) AS first",
                     schema: [Field("rows", .bigint)], batchRows: batchRows, lockTable: lockTable, source: source)
    }

    /// The rows that also satisfy `predicate` (SQL over the relation's columns,
    /// or `whole.` ones); with `columns`, only those of its columns are sent.
    func filtered(_ predicate: String, columns: [Field]? = nil) -> CopyRelation {
        let list = columns.map { $0.map { "whole.\(SQL.ident($0.name))" }.joined(separator: ", ") } ?? "*"
        return CopyRelation(connection: connection, sql: "SELECT \(list) FROM (\(sql)) AS whole WHERE \(predicate)",
                            schema: columns ?? schema, batchRows: batchRows, lockTable: lockTable, source: source)
    }

    func scan(_ context: ScanContext, _ body: (Batch) throws -> Void) throws {
        guard let split, split.streams > 1 else {
            return try scanWhole(context, body)
        }
        // A coordinating session exports its snapshot and holds it open while
        // the streams, which import it, read; they see exactly the same rows.
        let divided = try context.connections.with(connection) { coordinator -> Bool in
            try coordinator.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            defer { _ = try? coordinator.execute("ROLLBACK") }
            // A server that cannot export snapshots (or a relation it cannot
            // size) is read by one COPY, which then reports any real error.
            // (No savepoint: a snapshot cannot be exported from a subtransaction.)
            let found: PGResult
            do {
                // The lock comes first, so the snapshot follows any TRUNCATE, and
                // no TRUNCATE can commit until every stream has read.
                if let lockTable { try coordinator.execute(Self.lockSQL(lockTable)) }
                found = try coordinator.query("""
                    SELECT pg_export_snapshot(), c.relkind IN ('r', 'm') AND has_table_privilege(c.oid, 'SELECT'),
                           pg_relation_size(c.oid) / current_setting('block_size')::bigint
                    FROM pg_class c WHERE c.oid = $1::regclass
                    """, [SQL.qualified(split.table)])
            } catch let error as PGError where error.kind == .server {
                return false
            }
            // Only a plain table (or materialized view) has blocks to divide, and
            // only a reader who may select it whole may name them (ctid).
            guard let snapshot = found.string(0, 0), found.string(0, 1) == "t", let blocks = found.int(0, 2),
                  blocks >= Int(split.streams) else { return false }
            let active = (0..<split.streams).map { _ in ActiveConnection() }
            try Self.pipelined(producers: (0..<split.streams).map { stream in
                { emit in try read(split.select(stream: stream, blocks: Int64(blocks)), snapshot: snapshot, active[stream], context, emit) }
            }, interrupt: { active.forEach { $0.cancel() } }, body)
            return true
        }
        if !divided { try scanWhole(context, body) }
    }

    /// One COPY of the whole SELECT.
    private func scanWhole(_ context: ScanContext, _ body: (Batch) throws -> Void) throws {
        let active = ActiveConnection()
        // Reading and decoding run on their own thread, so the server keeps
        // sending while the consumer aggregates the previous batches.
        try Self.pipelined(produce: { emit in try read(sql, snapshot: nil, active, context, emit) },
                           interrupt: { active.cancel() }, body)
    }

    /// One producer: a session of its own, one read-only snapshot (`snapshot`,
    /// when given, is imported) and one COPY of `sql`.
    private func read(_ sql: String, snapshot: String?, _ active: ActiveConnection, _ context: ScanContext,
                      _ emit: (Batch) throws -> Void) throws {
        try context.connections.with(connection) { session in
            active.set(session)
            let outcome = Result { () throws -> Void in
                try session.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                defer { _ = try? session.execute("ROLLBACK") }
                if let snapshot {
                    try session.execute("SET TRANSACTION SNAPSHOT \(SQL.literal(snapshot))")
                    if let lockTable { try Self.lockBesideCoordinator(lockTable, session) }
                } else if let lockTable {
                    try session.execute(Self.lockSQL(lockTable))
                }
                do {
                    try Self.copy(sql, schema: schema, batchRows: batchRows, session, context, emit)
                } catch var error as PGError where error.kind == .server && source != nil {
                    error.message = "reading extract '\(source!)': \(error.message)"
                    throw error
                }
            }
            // A cancel request reaches the server on a connection of its own,
            // possibly after the COPY has ended: the session would then lose
            // the next statement it runs, so it is not handed on.
            let cancelSent = active.release()
            try outcome.get()
            if cancelSent { throw CancelSent() }
        }
    }

    /// The lock a read takes on its table: it conflicts only with TRUNCATE and DDL.
    private static func lockSQL(_ table: String) -> String { "LOCK TABLE \(SQL.qualified(table)) IN ACCESS SHARE MODE" }

    /// A stream's lock on a table its coordinator already holds. Without
    /// waiting: a TRUNCATE queued behind the coordinator would queue the
    /// stream behind itself, and the three would wait for each other for
    /// ever (pg_dump's workers do the same). The read is retried instead.
    static func lockBesideCoordinator(_ table: String, _ session: PGConnection) throws {
        do {
            try session.execute(Self.lockSQL(table) + " NOWAIT")
        } catch let error as PGError where error.sqlState == "55P03" {
            throw StageFailure.transient("another session asked for an exclusive lock on \(table) (a TRUNCATE or ALTER TABLE?) while it was being read in parallel; the read is given up so that session can go ahead, and retried")
        }
    }

    /// The consumer stopped this producer's statement; its session is closed.
    struct CancelSent: Error {}

    /// Streams one SELECT as COPY binary, decoded into batches of `batchRows`.
    private static func copy(_ sql: String, schema: [Field], batchRows: Int, _ session: PGConnection,
                             _ context: ScanContext, _ emit: (Batch) throws -> Void) throws {
        var decoder = BinaryCopyDecoder(schema: schema, capacity: batchRows)
        try session.copyOut("COPY (\(sql)) TO STDOUT (FORMAT binary)") { row in
            try decoder.decode(row)
            if decoder.batchRows >= batchRows {
                try context.cancellation.check()
                let batch = decoder.takeBatch()
                context.metrics.read(rows: batch.count)
                try emit(batch)
            }
        }
        let last = decoder.takeBatch()
        if last.count > 0 {
            context.metrics.read(rows: last.count)
            try emit(last)
        }
    }
}

/// The connection a producer thread is using, so the consumer can interrupt it.
final class ActiveConnection: @unchecked Sendable {
    private let lock = NSLock()
    private var connection: PGConnection?
    private var cancelSent = false

    func set(_ connection: PGConnection) { lock.withLock { self.connection = connection } }

    /// Asks the server to cancel the producer's statement, if it still has the connection.
    func cancel() {
        lock.withLock {
            guard let connection else { return }
            connection.cancel()
            cancelSent = true
        }
    }

    /// The producer is done with the connection: true if a cancel was sent to it meanwhile.
    func release() -> Bool {
        lock.withLock {
            connection = nil
            return cancelSent
        }
    }
}
