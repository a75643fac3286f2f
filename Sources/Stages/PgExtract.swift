import Crypto
import Foundation
import PipelineKit

/// Streams a table or query from a PostgreSQL connection with COPY (binary)
/// into typed columnar batches.
///
/// The stage itself only checks the declared columns against the source; the
/// rows flow when a downstream stage scans the output, while the COPY is
/// still running, so a large table is never held in memory whole.
public struct PgExtract: WatermarkSource {
    public static let type = "pgExtract"
    public static let summary = "Streams a table (chosen columns, optional predicate, optionally as parallel COPYs over block ranges in one snapshot) or a query with COPY binary into typed batches; the source session is read-only."
    public static let produces = OutputKind.relation
    public static let configKeys: [ConfigKey] = [
        .required("connection", .identifier, "the connection to read from"),
        .optional("table", .identifier, "table to read, as table or schema.table (give table or query)"),
        .optional("query", .string, "a SELECT to read instead of a table"),
        .required("columns", .dictionary(.string), "the columns to read, name: type (\(DataType.declarableNames)); checked against the source"),
        .optional("where", .string, "SQL predicate applied to the table"),
        .optional("batch_rows", .integer(min: 1, max: 1_048_576), "rows per batch handed downstream (default 16384)"),
        .optional("parallel", .integer(min: 1, max: 64), "COPY streams reading a 'table' at once, each a range of its blocks, all in one snapshot (default 1); for large tables on a server with cores to spare"),
        .optional("incremental", .object([
            .required("tracking_key", .identifier, "an integer column that grows with every new row, e.g. a bigserial id (need not be among 'columns')"),
            .optional("lookback", .integer(min: 0), "keys below the last watermark re-checked for rows whose transaction committed late (default 100000)"),
        ]), "follow new rows by key: incremental runs read only rows the last run did not see (needs 'table')"),
    ]

    let connection: String
    let table: String?
    let query: String?
    let predicate: String?
    let fields: [Field]
    let batchRows: Int
    let streams: Int
    let tracking: (key: String, lookback: Int64)?

    public init(config: ConfigNode, build: StageBuild) throws {
        connection = try build.connection(config["connection"])
        table = config["table"]?.string
        query = config["query"]?.string.map(Self.embeddable)
        predicate = config["where"]?.string.map(Self.embeddable)
        batchRows = config["batch_rows"]?.int ?? 16_384
        streams = config["parallel"]?.int ?? 1
        if (table == nil) == (query == nil) {
            build.error(at: config, "give exactly one of 'table' or 'query'")
            throw StageBuild.Invalid()
        }
        if query != nil, let node = config["where"] {
            build.error(at: node, "'where' applies to 'table'; put the predicate inside the query")
            throw StageBuild.Invalid()
        }
        if query != nil, let node = config["parallel"] {
            build.error(at: node, "'parallel' divides a 'table' by its blocks; a query is read by one COPY")
            throw StageBuild.Invalid()
        }
        fields = try build.fields(config["columns"])
        if let incremental = config["incremental"] {
            if table == nil {
                build.error(at: incremental, "incremental tracking needs 'table': it reads the table's rows by key and transaction id; for a query, track the table in its own extract")
                throw StageBuild.Invalid()
            }
            tracking = (incremental["tracking_key"]!.string!, Int64(incremental["lookback"]?.int ?? 100_000))
        } else {
            tracking = nil
        }
    }

    /// SQL as written for psql, made safe to wrap: a trailing `;` would end
    /// the statement early and a trailing `-- comment` would swallow the
    /// rest of the line, so the former is dropped, also before a comment
    /// (`x; -- note`), and a newline ends the latter.
    static func embeddable(_ sql: String) -> String {
        var text = Substring(sql)
        var comment: Substring = ""
        while true {
            while let last = text.last, last.isWhitespace || last == ";" { text = text.dropLast() }
            guard let start = trailingComment(in: text) else { break }
            comment = text[start...] + (comment.isEmpty ? "" : "\n") + comment
            text = text[..<start]
        }
        return text + (comment.isEmpty ? "" : " " + comment) + "\n"
    }

    /// Where a `--` comment on the last line starts, if one does: outside
    /// any quotes opened on that line (a string spanning lines is not seen).
    private static func trailingComment(in text: Substring) -> Substring.Index? {
        let line = text[(text.lastIndex(of: "\n").map { text.index(after: $0) } ?? text.startIndex)...]
        var quote: Character?
        var index = line.startIndex
        while index < line.endIndex {
            let character = line[index]
            if let open = quote {
                if character == open { quote = nil }
            } else if character == "'" || character == "\"" {
                quote = character
            } else if character == "-", line.index(after: index) < line.endIndex, line[line.index(after: index)] == "-" {
                return index
            }
            index = line.index(after: index)
        }
        return nil
    }

    /// The declared columns, quoted, in order.
    private var columnList: String { fields.map { SQL.ident($0.name) }.joined(separator: ", ") }

    /// The SELECT whose result is copied: only the declared columns, quoted.
    var selectSQL: String {
        if let table {
            return "SELECT \(columnList) FROM \(SQL.qualified(table))" + (predicate.map { " WHERE \($0)" } ?? "")
        }
        return "SELECT \(columnList) FROM (\(query!)) AS extract_query"
    }

    public func run(_ context: StageContext) throws -> StageOutput {
        let (dataset, lockable, unique) = try context.connections.with(connection) { connection -> (DatasetUse, Bool, Set<String>) in
            // Even the type check runs read-only: a query with a data-modifying CTE must not write.
            try connection.execute("BEGIN READ ONLY")
            defer { _ = try? connection.execute("ROLLBACK") }
            let result = try connection.query(selectSQL + " LIMIT 0")
            // A plain table is locked against a TRUNCATE when the reader may: LOCK needs SELECT on the
            // whole table, where reading needs it on the columns read. Not a view (its owner's or the
            // reader's rights on the tables under it decide, and a column grant would fail it), not a
            // partitioned table (it would lock every partition, however few the read touches), and
            // not a materialized or foreign table, which PostgreSQL cannot lock.
            // With it, the columns no two rows can share: those with a unique
            // index that covers every row (see `Self.uniqueIndexed`).
            let found = try table.map { table in
                try connection.query("""
                    SELECT relkind = 'r' AND has_table_privilege(oid, 'SELECT'), \(Self.uniqueIndexed)
                    FROM pg_class c WHERE oid = $1::regclass
                    """, [SQL.qualified(table)])
            }
            let lockable = found?.string(0, 0) == "t"
            let unique = Set(SQL.names(fromJSON: found?.string(0, 1)))
            var problems: [String] = []
            for (index, field) in fields.enumerated() {
                let oid = result.columnType(index)
                if !field.type.acceptedOIDs.contains(oid) {
                    problems.append("column '\(field.name)' is \(DataType.name(ofOID: oid)) in the source but declared \(field.type); declare it as the source type or cast it in a query")
                }
            }
            if !problems.isEmpty { throw StageFailure.config(problems.joined(separator: "; ")) }
            return (DatasetUse(
                direction: .input,
                namespace: "postgres://\(connection.resolvedHost):\(connection.resolvedPort)",
                name: "\(connection.resolvedDatabase).\(datasetName)",
                columns: Dictionary(uniqueKeysWithValues: fields.map { ($0.name, $0.type.description) })), lockable, unique)
        }
        context.metrics.used(dataset)
        let reading = { (sql: String) in
            CopyRelation(connection: self.connection, sql: sql, schema: self.fields, batchRows: self.batchRows,
                         lockTable: lockable ? self.table : nil, source: context.stageID)
        }
        var all = reading(selectSQL)
        if let table, streams > 1 {
            all.split = .init(table: table, columns: columnList,
                              predicate: predicate, streams: streams)
        }
        guard let refresh = context.refresh else { return .relation(all) }
        // The run could not read this tracked extract's watermark when it
        // started: reading it again reports why, as this stage's failure, with
        // retries. (An untracked extract's rows are met by the stage scanning them.)
        if tracking != nil && refresh.current[context.stageID] == nil {
            _ = try context.connections.with(connection) { connection in
                try connection.transaction(PGConnection.watermarkTransaction) { try currentWatermark(connection) }
            }
        }
        return .relation(TrackedExtract(all: all, changes: try changes(since: refresh.previous, context: context, reading: reading),
                                        uniqueColumns: unique.intersection(fields.map(\.name))))
    }

    /// The rows the last committed run did not take into account; nil on a full refresh.
    private func changes(since previous: RefreshState?, context: StageContext, reading: (String) -> CopyRelation) throws -> (any Relation)? {
        guard let previous else { return nil }
        let id = context.stageID
        guard let tracking else {
            // Untracked extracts are compared whole before the run: reaching here means unchanged.
            return EmptyRelation(schema: fields)
        }
        guard case let .tracked(_, high, snapshot)? = previous.watermarks[id] else {
            throw StageFailure.config("no watermark for this extract in the last run's state; run with --full-refresh")
        }
        guard let high else { return reading(selectSQL) }
        let key = SQL.ident(tracking.key)
        let late: String
        if let gaps = previous.gaps[id] {
            // Only a key missing when the last run read could belong to a row committed since.
            late = gaps.condition(on: key) ?? ""
        } else {
            guard !snapshot.isEmpty, snapshot.allSatisfy({ $0.isASCII && ($0.isNumber || $0 == ":" || $0 == ",") }) else {
                throw StageFailure.config("the stored snapshot '\(snapshot)' is not a pg_snapshot; run with --full-refresh")
            }
            late = Self.lateCondition(key: key, high: high, lookback: tracking.lookback, snapshot: snapshot)
        }
        // A day's new rows: read now, while the stages before this one's
        // consumers run, rather than when a consumer gets to them.
        return ReadAhead(reading(Self.changeQuery(columns: columnList, table: table!, key: key, high: high, late: late,
                                                  predicate: predicate)),
                         connections: context.connections, cancellation: context.cancellation)
    }

    /// The SELECT of an extract's changes: rows above `high`, rows matching
    /// `late` (rows below it the last run could not see), and rows whose key
    /// is NULL, which are above no watermark: every run reads them again.
    /// Each in an index scan of its own (an OR would turn the key range into
    /// a bitmap scan).
    static func changeQuery(columns: String, table: String, key: String, high: Int64, late: String, predicate: String?) -> String {
        let select = "SELECT \(columns) FROM \(SQL.qualified(table)) WHERE "
        let filter = predicate.map { " AND (\($0))" } ?? ""
        return ["\(key) > \(high)", late, "\(key) IS NULL"].filter { !$0.isEmpty }
            .map { select + $0 + filter }.joined(separator: " UNION ALL ")
    }

    /// The rows up to `lookback` keys below `high` that were inserted by a
    /// transaction not older than `snapshot`'s oldest: the look-back when the
    /// last run kept no key gaps (see `KeyGaps`).
    static func lateCondition(key: String, high: Int64, lookback: Int64, snapshot: String) -> String {
        // A row below the watermark may have been invisible to the last run
        // because its transaction was still open. Its creating transaction
        // (xmin) is then at or above the oldest one still running when the
        // last run took its snapshot (the snapshot's xmin). Comparing with
        // that bound rather than asking pg_visible_in_snapshot also covers
        // rows written in savepoints: a snapshot lists top-level transactions
        // only. Rows it flags that had committed in time are merely read again.
        // xmin is 32 bits and wraps around: both are compared by their age,
        // the distance back from the current transaction counter, which is
        // cheaper than widening every xmin through text. A row billions of
        // transactions old can look young again; it is then merely read again.
        let oldestOpen = "(pg_snapshot_xmin('\(snapshot)'::pg_snapshot)::text::bigint % 4294967296)::text::xid"
        // Keys near the bottom of bigint have no look-back range below them.
        let (low, below) = high.subtractingReportingOverflow(lookback)
        return (below ? "" : "\(key) > \(low) AND ") + "\(key) <= \(high) AND age(xmin) <= age(\(oldestOpen))"
    }

    /// As declared: the run checks them against the source.
    public func outputColumns(inputs: [String: [Field]]) throws -> [Field]? { fields }

    public var isTracked: Bool { tracking != nil }
    public var sourceConnection: String { connection }

    /// A tracked extract: the highest key and the snapshot it was read in.
    /// An untracked one: a SHA-256 of its rows (meant for small reference data).
    public func currentWatermark(_ connection: PGConnection) throws -> Watermark {
        if let tracking {
            let result = try connection.query("""
                SELECT max(\(SQL.ident(tracking.key)))::text, pg_current_snapshot()::text FROM \(SQL.qualified(table!))
                """ + (predicate.map { " WHERE \($0)" } ?? ""))
            guard let snapshot = result.string(0, 1) else { throw StageFailure.config("no snapshot from the source") }
            let high = try result.string(0, 0).map { text -> Int64 in
                guard let value = Int64(text) else {
                    throw StageFailure.config("tracking_key '\(tracking.key)' must be an integer column (its maximum is '\(text)')")
                }
                return value
            }
            return .tracked(key: tracking.key, high: high, snapshot: snapshot)
        }
        let digest = try connection.query("""
            SELECT encode(sha256(convert_to(coalesce(string_agg(ROW(q.*)::text, E'\\n' ORDER BY ROW(q.*)::text), ''), 'UTF8')), 'hex')
            FROM (\(selectSQL)) AS q
            """).string(0, 0) ?? ""
        return .content(sha256: digest)
    }

    /// A key filled by a sequence grows with it, but a row given a key above
    /// the sequence by hand lifts the watermark over every key the sequence
    /// hands out next: those rows would never be read incrementally.
    public func watermarkProblem(_ watermark: Watermark, _ connection: PGConnection) throws -> String? {
        guard let tracking, case let .tracked(_, high?, _) = watermark else { return nil }
        // pg_sequences shows last_value only to whom may read the sequence; NULL otherwise.
        let sequence = try connection.query("""
            SELECT s.last_value::text, s.schemaname || '.' || s.sequencename FROM pg_sequences s
            WHERE format('%I.%I', s.schemaname, s.sequencename)::regclass = pg_get_serial_sequence($1, $2)::regclass
            """, [SQL.qualified(table!), tracking.key])
        guard sequence.rowCount == 1, let last = sequence.string(0, 0).flatMap(Int64.init), high > last else { return nil }
        return "its highest \(tracking.key), \(high), is above what its sequence \(sequence.string(0, 1) ?? "") has handed out (\(last)), so rows it hands out next would fall below the watermark and not be read incrementally; renumber or delete the rows above it, or track another key"
    }

    /// The keys of the look-back below the watermark that no row has: those
    /// the last run's gaps still lack, and those missing above its watermark
    /// (all of the look-back on a full refresh). Rows of every kind count,
    /// also those `where` leaves out: a gap is a key no row has. Only for a
    /// unique key: a row committed late could otherwise share its key with a
    /// row seen in time, and no gap would mark it.
    public func keyGaps(below watermark: Watermark, previous: (watermark: Watermark, gaps: KeyGaps)?,
                        _ connection: PGConnection) throws -> KeyGaps? {
        guard let tracking, case let .tracked(_, high, _) = watermark else { return nil }
        let key = SQL.ident(tracking.key)
        let table = SQL.qualified(self.table!)
        guard try isUnique(table: table, connection) else { return nil }
        guard let high else { return KeyGaps() }
        let (low, below) = high.subtractingReportingOverflow(tracking.lookback)
        let floor = below ? Int64.min : low
        var gaps = KeyGaps()
        var searchedFrom = floor
        if let previous, case let .tracked(previousKey, previousHigh?, _) = previous.watermark,
           previousKey == tracking.key, previousHigh <= high {
            let kept = floor < previousHigh ? previous.gaps.clamped(to: (floor + 1)...previousHigh) : KeyGaps()
            if let inGaps = kept.condition(on: key) {
                let found = try connection.query("SELECT \(key)::bigint FROM \(table) WHERE \(inGaps) LIMIT \(KeyGaps.limit + 1)")
                // Gaps filled in such numbers are better re-checked by transaction id.
                if found.rowCount > KeyGaps.limit { return nil }
                gaps = kept.removing(found.rows.compactMap { $0[0].flatMap(Int64.init) })
            }
            searchedFrom = max(previousHigh, floor)
        }
        if searchedFrom < high, try !isDense(table: table, key: key, above: searchedFrom, upTo: high, connection) {
            // Between consecutive keys: their row order makes this one pass over the key's index.
            let missing = try connection.query("""
                SELECT lo::text, hi::text FROM (
                    SELECT lag(\(key)::bigint, 1, \(searchedFrom)::bigint) OVER (ORDER BY \(key)) + 1 AS lo, \(key)::bigint - 1 AS hi
                    FROM \(table) WHERE \(key) > \(searchedFrom) AND \(key) <= \(high)) AS steps
                WHERE lo <= hi LIMIT \(KeyGaps.limit + 1)
                """)
            if missing.rowCount > KeyGaps.limit { return nil }
            let ranges = missing.rows.compactMap { row -> ClosedRange<Int64>? in
                guard let lo = row[0].flatMap(Int64.init), let hi = row[1].flatMap(Int64.init) else { return nil }
                return lo...hi
            }
            gaps = KeyGaps(gaps.ranges + ranges)
        }
        return gaps.ranges.count > KeyGaps.limit ? nil : gaps
    }

    /// The columns of table `c` (pg_class) with a unique index that covers
    /// every row the extract reads, as a JSON array: valid, on the column
    /// alone, without a predicate, and on a table without inheritance children
    /// (a partitioned table's index covers its partitions).
    static let uniqueIndexed = """
        (SELECT json_agg(a.attname)::text
         FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
         WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid AND i.indnkeyatts = 1 AND i.indpred IS NULL
           AND (c.relkind = 'p' OR NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhparent = c.oid)))
        """

    /// Whether the tracking key has a unique index that covers every row the extract reads.
    private func isUnique(table: String, _ connection: PGConnection) throws -> Bool {
        let columns = try connection.query("SELECT \(Self.uniqueIndexed) FROM pg_class c WHERE c.oid = $1::regclass", [table]).string(0, 0)
        return SQL.names(fromJSON: columns).contains(tracking!.key)
    }

    /// Whether every key in `(low, high]` has a row, as is usual for a day of
    /// keys from a sequence: with a unique key, counting them is a third of
    /// the work of finding where keys are missing.
    private func isDense(table: String, key: String, above low: Int64, upTo high: Int64, _ connection: PGConnection) throws -> Bool {
        let (width, overflow) = high.subtractingReportingOverflow(low)
        guard !overflow else { return false }
        return try connection.query("SELECT count(*) = \(width) FROM \(table) WHERE \(key) > \(low) AND \(key) <= \(high)")
            .string(0, 0) == "t"
    }

    /// An extract is a view of its source: restoring it is running it.
    public func restore(_ context: StageContext) throws -> StageOutput? { try run(context) }

    private var datasetName: String {
        if let table {
            let parts = SQL.splitQualified(table)
            return "\(parts.schema ?? "public").\(parts.table)"
        }
        let digest = Hex.string(SHA256.hash(data: Data(query!.utf8)).prefix(8))
        return "query.\(digest)"
    }
}

/// An extract in a pipeline with tracked extracts: all rows, and in an
/// incremental run the rows new since the last one.
struct TrackedExtract: ChangeTrackedRelation, KeyRestrictable, UniquelyKeyed {
    let all: CopyRelation
    let changes: (any Relation)?
    let uniqueColumns: Set<String>

    var schema: [Field] { all.schema }
    func scan(_ context: ScanContext, _ body: (Batch) throws -> Void) throws { try all.scan(context, body) }
    func restricted(to scope: KeyScope) -> any Relation { all.restricted(to: scope) }
    func restrictedByFirstColumnToo(to scope: KeyScope) -> any Relation { all.restrictedByFirstColumnToo(to: scope) }
    func restricted(to scope: KeyScope, before micros: Int64, in column: String) -> any Relation {
        all.restricted(to: scope, before: micros, in: column)
    }
}
