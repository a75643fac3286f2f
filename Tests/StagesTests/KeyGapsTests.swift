import Foundation
@testable import PipelineKit
@testable import Stages
import XCTest

/// The keys a tracked extract's watermark leaves missing below it: the only
/// keys a row still uncommitted when the watermark was read can have, so the
/// next run reads rows with them instead of checking every row of the look-back.
final class KeyGapsTests: XCTestCase {
    // MARK: - The list itself

    func testRangesAreKeptSortedMergedAndWithoutTheKeysRowsNowHave() {
        let gaps = KeyGaps([9...9, 1...3, 4...5, 20...30])
        XCTAssertEqual(gaps.ranges, [1...5, 9...9, 20...30], "adjacent ranges merge")
        XCTAssertEqual(gaps.removing([2, 9, 20, 25, 30, 99]).ranges, [1...1, 3...5, 21...24, 26...29])
        XCTAssertEqual(gaps.clamped(to: 3...21).ranges, [3...5, 9...9, 20...21])
        XCTAssertEqual(KeyGaps([(Int64.max - 1)...Int64.max]).removing([Int64.max]).ranges, [(Int64.max - 1)...(Int64.max - 1)],
                       "the top of bigint is removed without overflowing")
    }

    func testShortRangesAreLookedUpKeyByKeyAndLongOnesAsRanges() {
        XCTAssertNil(KeyGaps().condition(on: "id"))
        XCTAssertEqual(KeyGaps([4...5, 100...199, Int64.min...0]).condition(on: "id"),
                       "(id = ANY ('{4,5}'::bigint[]) OR id BETWEEN \(Int64.min) AND 0 OR id BETWEEN 100 AND 199)")
    }

    func testTheListIsStoredAsPairsAndReadBack() throws {
        let gaps = KeyGaps([1...3, 7...7])
        let json = String(decoding: try JSONEncoder().encode(gaps), as: UTF8.self)
        XCTAssertEqual(json, "[[1,3],[7,7]]")
        XCTAssertEqual(try JSONDecoder().decode(KeyGaps.self, from: Data(json.utf8)), gaps)
        XCTAssertThrowsError(try JSONDecoder().decode(KeyGaps.self, from: Data("[[3,1]]".utf8)), "a pair must not run backwards")
    }

    // MARK: - Searching the source

    func testAFullSearchListsEveryMissingKeyOfTheLookBack() throws {
        let (source, stage) = try table(keys: "SELECT k FROM generate_series(1, 20) k WHERE k NOT IN (4, 7, 8, 9, 15)", lookback: 30)
        let gaps = try search(stage, source, previous: nil)
        XCTAssertEqual(gaps?.ranges, [-9...0, 4...4, 7...9, 15...15], "keys 1 to 20, look-back to -10 (exclusive)")
    }

    func testAnIncrementalSearchKeepsTheGapsStillMissingAndAddsThoseAboveTheLastWatermark() throws {
        let (source, stage) = try table(keys: "SELECT k FROM generate_series(1, 20) k WHERE k NOT IN (4, 7, 8, 9, 15)", lookback: 30)
        let first = try XCTUnwrap(try search(stage, source, previous: nil))
        let before = try stage.currentWatermark(source)
        // Key 8 arrives late, keys 21 to 30 but 25 on time; the look-back now starts above 0.
        try source.execute("INSERT INTO t SELECT k, 0 FROM generate_series(21, 30) k WHERE k <> 25; INSERT INTO t VALUES (8, 0)")
        let gaps = try search(stage, source, previous: (before, first))
        XCTAssertEqual(gaps?.ranges, [4...4, 7...7, 9...9, 15...15, 25...25],
                       "the look-back now starts above 0, key 8 is no longer missing, 25 is")
    }

    func testRowsWithAKeyInAGapAreReadAsChangesWithThoseAboveTheWatermark() throws {
        let (source, _) = try table(keys: "SELECT k FROM generate_series(1, 10) k WHERE k NOT IN (3, 6)", lookback: 100)
        try source.execute("INSERT INTO t VALUES (3, 1), (11, 1)")
        let late = KeyGaps([3...3, 6...6]).condition(on: "k") ?? ""
        let sql = PgExtract.changeQuery(columns: "k", table: "t", key: "k", high: 10, late: late, predicate: nil)
        XCTAssertEqual(try source.query("SELECT string_agg(k::text, ',' ORDER BY k) FROM (\(sql)) q").string(0, 0), "3,11")
    }

    func testAKeyFilledOutOfOrderByAnotherTransactionIsStillAGapInTheWatermarksSnapshot() throws {
        let (database, stage) = try table(keys: "SELECT k FROM generate_series(1, 10) k WHERE k <> 5", lookback: 100, returnConninfo: true)
        let reader = try TestDatabase.connect(database)
        let writer = try TestDatabase.connect(database)
        try reader.execute(PGConnection.watermarkTransaction)
        _ = try stage.currentWatermark(reader)
        try writer.execute("INSERT INTO t VALUES (5, 0)")
        let gaps = try stage.keyGaps(below: try stage.currentWatermark(reader), previous: nil, reader)
        try reader.execute("COMMIT")
        XCTAssertEqual(gaps?.ranges.last, 5...5, "key 5 committed after the snapshot: its row may be one the run did not read")
    }

    func testMoreGapsThanTheLimitAreNotKept() throws {
        let (source, stage) = try table(keys: "SELECT 2 * k FROM generate_series(1, \(KeyGaps.limit + 1)) k",
                                        lookback: Int64(4 * KeyGaps.limit))
        XCTAssertNil(try search(stage, source, previous: nil), "the next run re-checks the look-back by transaction id instead")
    }

    /// A row committed late could share its key with a row seen in time: no gap would mark it.
    func testAKeyWithoutAUniqueIndexOverEveryRowKeepsNoGaps() throws {
        let (plain, plainStage) = try table(keys: "SELECT k FROM generate_series(1, 6) k", lookback: 10, unique: false)
        XCTAssertNil(try search(plainStage, plain, previous: nil), "no unique index")
        let (inherited, inheritedStage) = try table(keys: "SELECT k FROM generate_series(1, 6) k", lookback: 10)
        try inherited.execute("CREATE TABLE t_child () INHERITS (t); INSERT INTO t_child VALUES (3, 0)")
        XCTAssertNil(try search(inheritedStage, inherited, previous: nil), "the parent's key index does not cover its child's rows")
    }

    // MARK: - Support

    private func table(keys: String, lookback: Int64, unique: Bool = true) throws -> (PGConnection, PgExtract) {
        let (database, stage) = try table(keys: keys, lookback: lookback, unique: unique, returnConninfo: true)
        return (try TestDatabase.connect(database), stage)
    }

    private func table(keys: String, lookback: Int64, unique: Bool = true, returnConninfo: Bool) throws -> (String, PgExtract) {
        let database = try TestDatabase.createDatabase("gaps")
        try TestDatabase.connect(database).execute("""
            CREATE TABLE t (k bigint \(unique ? "PRIMARY KEY" : ""), v int); INSERT INTO t SELECT k, 0 FROM (\(keys)) AS keys(k)
            """)
        let stage = try UnitFixture.make(PgExtract.self, "e",
                                         yaml: "{connection: source, table: t, columns: {v: int}, incremental: {tracking_key: k, lookback: \(lookback)}}",
                                         inputs: [:], connections: ["source": true])
        return (database, stage)
    }

    /// The gaps as a run finds them: in the transaction it reads the watermark in.
    private func search(_ stage: PgExtract, _ source: PGConnection, previous: (watermark: Watermark, gaps: KeyGaps)?) throws -> KeyGaps? {
        try source.transaction(PGConnection.watermarkTransaction) {
            try stage.keyGaps(below: try stage.currentWatermark(source), previous: previous, source)
        }
    }
}
