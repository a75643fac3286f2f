import Foundation
import PipelineKit
import XCTest

/// An incremental result replaces exactly its groups in a warehouse table.
final class ScopedWriteTests: XCTestCase {
    private let columns = [Field("user_id", .bigint), Field("program_id", .int), Field("lessons", .int)]

    private func batch(_ rows: [(Int64, Int64, Int64)]) -> Batch {
        var batch = Batch(schema: columns)
        for (user, program, lessons) in rows { batch.append(row: [.int(user), .int(program), .int(lessons)]) }
        return batch
    }

    private func write(_ connection: PGConnection, _ rows: [(Int64, Int64, Int64)], scope: KeyScope?) throws -> WriteCounts {
        let writer = TableWriter(table: "dw.scoped", columns: columns, key: ["user_id", "program_id"])
        let rows = batch(rows)
        return try writer.write(connection, runID: UUID(), deleteMissing: true, scope: scope?.batch) { try $0(rows) }
    }

    private func contents(_ connection: PGConnection) throws -> [String] {
        try connection.query("SELECT user_id, program_id, lessons FROM dw.scoped ORDER BY 1, 2").rows
            .map { $0.map { $0 ?? "NULL" }.joined(separator: "|") }
    }

    func testRowsOfGroupsInScopeAreReplacedAndRowsOutsideAreLeftAlone() throws {
        let connection = try TestDatabase.connect(try TestDatabase.createDatabase("scoped_dw"))
        _ = try write(connection, [(1, 1, 5), (1, 2, 7), (2, 1, 3), (3, 1, 9)], scope: nil)

        // Groups (1,1), (1,2) and (2,1) were recomputed: (1,1) changed, (1,2) no longer exists, (2,1) is the same.
        let scope = KeyScope(columns: ["user_id", "program_id"], first: [1, 1, 2], second: [1, 2, 1])
        let counts = try write(connection, [(1, 1, 6), (2, 1, 3)], scope: scope)

        XCTAssertEqual(counts, WriteCounts(inserted: 0, updated: 1, deleted: 1, unchanged: 1))
        XCTAssertEqual(try contents(connection), ["1|1|6", "2|1|3", "3|1|9"], "(3,1) is outside the scope and must stay")
    }

    func testAScopeOnPartOfTheKeyDeletesTheRowsOfItsValuesThatWereNotWrittenAgain() throws {
        let connection = try TestDatabase.connect(try TestDatabase.createDatabase("scoped_dw"))
        _ = try write(connection, [(1, 1, 5), (1, 2, 7), (2, 1, 3)], scope: nil)

        // User 1 was recomputed and now has program 1 only: (1,2) goes, user 2 stays.
        let counts = try write(connection, [(1, 1, 5)], scope: KeyScope(columns: ["user_id"], first: [1]))

        XCTAssertEqual(counts, WriteCounts(inserted: 0, updated: 0, deleted: 1, unchanged: 1))
        XCTAssertEqual(try contents(connection), ["1|1|5", "2|1|3"])
    }

    func testAnEmptyScopeWritesNothingAndDeletesNothing() throws {
        let connection = try TestDatabase.connect(try TestDatabase.createDatabase("scoped_dw"))
        _ = try write(connection, [(1, 1, 5), (2, 1, 3)], scope: nil)
        let counts = try write(connection, [], scope: KeyScope(columns: ["user_id", "program_id"], first: [], second: []))
        XCTAssertEqual(counts, WriteCounts())
        XCTAssertEqual(try contents(connection), ["1|1|5", "2|1|3"])
    }

    func testAScopeOnAColumnTheTableLacksIsAConfigurationErrorNamingIt() throws {
        let connection = try TestDatabase.connect(try TestDatabase.createDatabase("scoped_dw"))
        XCTAssertThrowsError(try write(connection, [(1, 1, 5)], scope: KeyScope(columns: ["cohort"], first: [1]))) { error in
            XCTAssertTrue(String(describing: error).contains("'cohort'"), "\(error)")
        }
    }

    func testAScopeSplitsIntoSlicesThatCoverEveryGroupOnce() {
        let scope = KeyScope(columns: ["u", "p"], first: [1, 2, 3, 4, 5], second: [10, 20, 30, 40, 50])
        let halves = scope.split(into: 2)
        XCTAssertEqual(halves.map(\.first), [[1, 2, 3], [4, 5]])
        XCTAssertEqual(halves.map(\.second), [[10, 20, 30], [40, 50]])
        XCTAssertEqual(KeyScope(columns: ["u"], first: [7]).split(into: 2).map(\.first), [[7]])
    }

    func testAScopeSelectsItsGroupsInSQL() {
        XCTAssertEqual(KeyScope(columns: ["user_id"], first: [3, 4]).sqlPredicate(),
                       "\"user_id\" = ANY ('{3,4}'::bigint[])")
        XCTAssertEqual(KeyScope(columns: ["user_id", "program_id"], first: [3], second: [1]).sqlPredicate(qualifier: "w"),
                       "(w.\"user_id\", w.\"program_id\") IN (SELECT * FROM unnest('{3}'::bigint[], '{1}'::bigint[]))")
    }
}
