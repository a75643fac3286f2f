import Foundation
@testable import PipelineKit
@testable import Stages
import XCTest

/// A written table's `indexes`: created with the table, added to an existing
/// table that lacks them, never dropped, and checked against the columns.
final class DeclaredIndexesTests: XCTestCase {
    typealias F = UnitFixture
    private let columns = [Field("user_id", .bigint), Field("program_id", .int), Field("month1date", .date)]

    private func write(_ connection: PGConnection, indexes: [[String]]) throws {
        var rows = Batch(schema: columns)
        rows.append(row: [.int(1), .int(2), .int(7000)])
        let writer = TableWriter(table: "dw.fact", columns: columns, key: ["user_id", "program_id"], indexes: indexes)
        _ = try writer.write(connection, runID: UUID(), deleteMissing: true) { try $0(rows) }
    }

    private func indexes(_ connection: PGConnection) throws -> [String] {
        try connection.query("""
            SELECT indexname || ' ' || regexp_replace(indexdef, '.* USING ', '') FROM pg_indexes
            WHERE schemaname = 'dw' AND tablename = 'fact' ORDER BY 1
            """).rows.compactMap { $0[0] }
    }

    func testAFirstLoadBuildsTheDeclaredIndexes() throws {
        let connection = try TestDatabase.connect(try TestDatabase.createDatabase("indexes_dw"))
        try write(connection, indexes: [["month1date"]])
        XCTAssertEqual(try indexes(connection), ["fact_month1date_idx btree (month1date)", "fact_pkey btree (user_id, program_id)"])
        XCTAssertEqual(try connection.query("SELECT count(*) FROM dw.fact").int(0, 0), 1)
    }

    func testIndexesAreAddedToATableWithoutThem() throws {
        let connection = try TestDatabase.connect(try TestDatabase.createDatabase("indexes_dw"))
        try write(connection, indexes: [])
        XCTAssertEqual(try indexes(connection), ["fact_pkey btree (user_id, program_id)"])

        try write(connection, indexes: [["month1date"], ["program_id", "month1date"]])
        try write(connection, indexes: [["month1date"], ["program_id", "month1date"]])
        XCTAssertEqual(try indexes(connection), [
            "fact_month1date_idx btree (month1date)",
            "fact_pkey btree (user_id, program_id)",
            "fact_program_id_month1date_idx btree (program_id, month1date)",
        ])

        try write(connection, indexes: [])
        XCTAssertEqual(try indexes(connection).count, 3, "an index no longer declared is left in place")
    }

    /// A btree index already there on the same columns (built by hand with
    /// CREATE INDEX CONCURRENTLY, say) serves: no second one is built.
    func testAnIndexOnTheSameColumnsUnderAnotherNameServesTheDeclaration() throws {
        let connection = try TestDatabase.connect(try TestDatabase.createDatabase("indexes_dw"))
        try write(connection, indexes: [])
        try connection.execute("CREATE INDEX by_hand ON dw.fact (month1date)")
        try write(connection, indexes: [["month1date"]])
        XCTAssertEqual(try indexes(connection), ["by_hand btree (month1date)", "fact_pkey btree (user_id, program_id)"])
    }

    /// A hash index cannot serve a range of dates: the declared btree is built beside it.
    func testAnIndexOfAnotherKindDoesNotServeTheDeclaration() throws {
        let connection = try TestDatabase.connect(try TestDatabase.createDatabase("indexes_dw"))
        try write(connection, indexes: [])
        try connection.execute("CREATE INDEX by_hash ON dw.fact USING hash (month1date)")
        try write(connection, indexes: [["month1date"]])
        XCTAssertEqual(try indexes(connection), ["by_hash hash (month1date)", "fact_month1date_idx btree (month1date)",
                                                 "fact_pkey btree (user_id, program_id)"])
    }

    /// A first load builds its indexes in its own transaction: when it fails, they go with its rows.
    func testAFailedFirstLoadLeavesNeitherRowsNorIndexes() throws {
        let connection = try TestDatabase.connect(try TestDatabase.createDatabase("indexes_dw"))
        var rows = Batch(schema: columns)
        rows.append(row: [.int(1), .int(2), .int(7000)])
        rows.append(row: [.int(1), .int(2), .int(7001)])
        let writer = TableWriter(table: "dw.fact", columns: columns, key: ["user_id", "program_id"], indexes: [["month1date"]])
        XCTAssertThrowsError(try writer.write(connection, runID: UUID(), deleteMissing: true) { try $0(rows) })
        XCTAssertEqual(try connection.query("SELECT count(*) FROM dw.fact").int(0, 0), 0)
        XCTAssertEqual(try indexes(connection), ["fact_pkey btree (user_id, program_id)"])
    }

    func testAnIndexNameTakenByAnIndexOnOtherColumnsFailsTheWriteNamingIt() throws {
        let connection = try TestDatabase.connect(try TestDatabase.createDatabase("indexes_dw"))
        try write(connection, indexes: [])
        try connection.execute("CREATE INDEX fact_month1date_idx ON dw.fact (program_id)")
        XCTAssertThrowsError(try write(connection, indexes: [["month1date"]])) { error in
            XCTAssertTrue("\(error)".contains("the index on dw.fact (month1date) could not be created: another index or table is named fact_month1date_idx"), "\(error)")
        }
    }

    /// The table's columns are checked first: an index on a column the table
    /// lacks gets the table's mismatch, not PostgreSQL's "column does not exist".
    func testAnIndexOnAColumnTheExistingTableLacksReportsTheTableMismatch() throws {
        let connection = try TestDatabase.connect(try TestDatabase.createDatabase("indexes_dw"))
        try write(connection, indexes: [])
        var rows = Batch(schema: columns + [Field("month3date", .date)])
        rows.append(row: [.int(1), .int(2), .int(7000), .int(7060)])
        let writer = TableWriter(table: "dw.fact", columns: rows.schema, key: ["user_id", "program_id"], indexes: [["month3date"]])
        XCTAssertThrowsError(try writer.write(connection, runID: UUID(), deleteMissing: true) { try $0(rows) }) { error in
            XCTAssertTrue("\(error)".contains("table dw.fact does not match the declaration: column month3date is missing"), "\(error)")
        }
        XCTAssertEqual(try indexes(connection), ["fact_pkey btree (user_id, program_id)"])
    }

    func testAnIndexNameTooLongForPostgreSQLIsCutAndToldApartByAHash() {
        let long = String(repeating: "c", count: 40)
        let one = TableWriter.indexName(table: "dw.a_table_with_a_long_name", columns: [long, "x"])
        let other = TableWriter.indexName(table: "dw.a_table_with_a_long_name", columns: [long, "y"])
        XCTAssertLessThanOrEqual(one.utf8.count, 63, one)
        XCTAssertTrue(one.hasPrefix("a_table_with_a_long_name_ccc"), one)
        XCTAssertNotEqual(one, other)
        XCTAssertEqual(TableWriter.indexName(table: "dw.fact", columns: ["a", "b"]), "fact_a_b_idx")
    }

    func testAnIndexOnAColumnTheStageDoesNotWriteFailsNamingItAndWritesNothing() throws {
        let warehouse = try TestDatabase.createDatabase("indexes_dw")
        let stage = try F.make(FactUpsert.self, "fact", yaml: """
            from: pairs
            connection: warehouse
            table: dw.fact
            key: [user_id, program_id]
            indexes: [month3date]
            columns: {user_id: bigint, program_id: int, month1date: date}
            """, inputs: ["pairs": .relation], connections: ["warehouse": false])
        let context = F.context(stageID: "fact", inputs: ["pairs": F.relation(columns, [[.int(1), .int(2), .int(7000)]])],
                                connections: ["warehouse": ConnectionDefinition(name: "warehouse", info: ConnInfo(warehouse), readOnly: false)])
        XCTAssertThrowsError(try stage.run(context)) { error in
            XCTAssertTrue("\(error)".contains("index column 'month3date' is not among the columns written to dw.fact"), "\(error)")
        }
        XCTAssertEqual(try TestDatabase.connect(warehouse).query("SELECT to_regclass('dw.fact') IS NULL").string(0, 0), "t")
    }

    func testAnIndexWithoutColumnsIsRejectedWhenBuilt() throws {
        let (build, sink) = F.build("fact", inputs: ["pairs": .relation], connections: ["warehouse": false])
        XCTAssertThrowsError(try FactUpsert(config: try F.config("""
            from: pairs
            connection: warehouse
            table: dw.fact
            key: id
            indexes: [[]]
            columns: {id: bigint}
            """), build: build))
        XCTAssertEqual(sink.diagnostics.map(\.message), ["stage 'fact': an index needs at least one column"])
    }
}
