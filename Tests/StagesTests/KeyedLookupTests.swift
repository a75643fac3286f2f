import Foundation
@testable import PipelineKit
@testable import Stages
import XCTest

/// In an incremental run, a lookupBuild over a tracked input hands on a lookup
/// read by key: a consumer gets the rows of the keys it asks for and of the
/// keys that changed, and they answer exactly as the whole lookup would.
final class KeyedLookupTests: XCTestCase {
    typealias F = UnitFixture

    static let fields = [Field("id", .bigint), Field("created_on", .timestamptz)]
    static let yaml = "from: users\nkey: id\n"

    /// Users 1–4 seen by the last run, user 5 new since.
    static let users: [[Value]] = (1...5).map { [.int(Int64($0)), .int(Int64($0) * 1_000_000)] }

    func testAnIncrementalRunReadsOnlyTheAskedKeysAndTheChangedOnes() throws {
        let source = TrackedUsers(rows: Self.users, changed: [Self.users[4]])
        let output = try run(source, incremental: true)
        guard case .keyedLookup = output else { return XCTFail("expected a lookup read by key, got \(output)") }
        XCTAssertEqual(source.restrictions, [], "nothing is read before a consumer asks")

        let consumer = F.context(stageID: "userprogram", inputs: ["user_lookup": output])
        let lookup = try consumer.lookup("user_lookup", keys: [2])

        XCTAssertEqual(source.restrictions, [[2, 5]], "the asked key and the changed one, in one read")
        XCTAssertEqual(lookup.value(1, forRaw: [.int(2)]), .int(2_000_000))
        XCTAssertEqual(lookup.value(1, forRaw: [.int(5)]), .int(5_000_000))
        XCTAssertEqual(lookup.positions(forRaw: [.int(3)]), [], "a key nobody asked for is not read")
        XCTAssertEqual(try consumer.lookupChanges("user_lookup").changedKeys, [[.int(5)]])
    }

    func testAConsumerAskingForEveryRowReadsThemAll() throws {
        let source = TrackedUsers(rows: Self.users, changed: [Self.users[4]])
        let consumer = F.context(stageID: "userprogram", inputs: ["user_lookup": try run(source, incremental: true)])
        let lookup = try consumer.lookup("user_lookup")
        XCTAssertEqual(source.restrictions, [], "read whole, not by key")
        XCTAssertEqual(lookup.rows.count, 5)
        XCTAssertEqual(lookup.changedKeys, [[.int(5)]])
    }

    /// The source's unique index rules duplicates out; should one appear all
    /// the same among the rows read (a key's rows are all read), the run
    /// fails as a whole read would, naming the lookup.
    func testARepeatedKeyAmongTheRowsReadFailsTheConsumerNamingTheLookupAndTheKey() throws {
        let repeated: [Value] = [.int(3), .int(9_000_000)]
        let source = TrackedUsers(rows: Self.users + [repeated], changed: [repeated])
        let consumer = F.context(stageID: "userprogram", inputs: ["user_lookup": try run(source, incremental: true)])
        XCTAssertThrowsError(try consumer.lookup("user_lookup", keys: [1])) { error in
            guard case StageFailure.data(let message) = error else { return XCTFail("not a data error: \(error)") }
            XCTAssertTrue(message.hasPrefix("lookup 'user_lookup': 2 rows of 'users' share the key 3"), message)
        }
    }

    func testAFullRefreshOrARuleThatDropsRowsBuildsTheWholeLookup() throws {
        let source = TrackedUsers(rows: Self.users, changed: [Self.users[4]])
        guard case .lookup(let whole) = try run(source, incremental: false) else { return XCTFail("a full refresh reads every row") }
        XCTAssertEqual(whole.rows.count, 5)
        let first = try F.make(LookupBuild.self, "user_lookup", yaml: Self.yaml + "duplicates: first\norder_by: created_on\n",
                               inputs: ["users": .relation])
        guard case .lookup = try first.run(incrementalContext(source)) else {
            return XCTFail("duplicates: first drops rows, and counts them, so it reads every row")
        }
    }

    /// An old key can gain a second row unseen (an id reused below the
    /// look-back, an update): only a unique index rules that out, so without
    /// one `duplicates: error` reads every row, as a full refresh does.
    func testDuplicatesErrorOnAKeyWithoutAUniqueIndexReadsEveryRow() throws {
        let source = TrackedUsers(rows: Self.users, changed: [Self.users[4]], uniqueKey: false)
        guard case .lookup(let whole) = try run(source, incremental: true) else { return XCTFail("no unique index: read whole") }
        XCTAssertEqual(whole.rows.count, 5)
        let all = try F.make(LookupBuild.self, "user_lookup", yaml: Self.yaml + "duplicates: all\n", inputs: ["users": .relation])
        guard case .keyedLookup = try all.run(incrementalContext(source)) else {
            return XCTFail("duplicates: all reads every row of the keys it reads: it needs no unique index")
        }
    }

    /// Keys read by key travel as integers: a date (or numeric) key is read whole.
    func testOnlyAnIntegerKeyIsReadByKey() throws {
        let fields = [Field("day", .date), Field("name", .text)]
        let source = TrackedUsers(fields: fields, rows: [[.int(7000), .text("holiday")]], changed: [], uniqueKeys: ["day"])
        let stage = try F.make(LookupBuild.self, "holidays", yaml: "from: users\nkey: day\n", inputs: ["users": .relation])
        guard case .lookup = try stage.run(incrementalContext(source)) else { return XCTFail("a date key is read whole") }
    }

    private func run(_ source: TrackedUsers, incremental: Bool) throws -> StageOutput {
        let stage = try F.make(LookupBuild.self, "user_lookup", yaml: Self.yaml, inputs: ["users": .relation])
        return try stage.run(incremental ? incrementalContext(source) : F.context(stageID: "user_lookup", inputs: ["users": .relation(source)]))
    }

    private func incrementalContext(_ source: TrackedUsers) -> StageContext {
        var context = F.context(stageID: "user_lookup", inputs: ["users": .relation(source)])
        let fingerprint = RefreshFingerprint(stages: [:], variables: [:])
        let since = RefreshState(runID: UUID(), asOf: CivilDate(year: 2020, month: 1, day: 1), fingerprint: fingerprint, watermarks: [:])
        context.refresh = RefreshPlan(mode: .incremental(since: since), current: [:], fingerprint: fingerprint,
                                      asOf: CivilDate(year: 2020, month: 1, day: 2))
        return context
    }
}

/// A tracked input in memory that records which keys it was read by.
private final class TrackedUsers: ChangeTrackedRelation, KeyRestrictable, UniquelyKeyed, @unchecked Sendable {
    let all: Batch
    let changes: (any Relation)?
    let uniqueColumns: Set<String>
    private let lock = NSLock()
    private var asked: [[Int64]] = []

    init(fields: [Field] = KeyedLookupTests.fields, rows: [[Value]], changed: [[Value]], uniqueKeys: Set<String> = ["id"]) {
        all = UnitFixture.batch(fields, rows)
        changes = MaterializedRelation(UnitFixture.batch(fields, changed))
        uniqueColumns = uniqueKeys
    }

    convenience init(rows: [[Value]], changed: [[Value]], uniqueKey: Bool) {
        self.init(rows: rows, changed: changed, uniqueKeys: uniqueKey ? ["id"] : [])
    }

    var restrictions: [[Int64]] { lock.withLock { asked } }
    var schema: [Field] { all.schema }

    func scan(_ context: ScanContext, _ body: (Batch) throws -> Void) throws { try body(all) }

    func restricted(to scope: KeyScope) -> any Relation {
        lock.withLock { asked.append(scope.first) }
        var rows = Batch(schema: all.schema)
        for row in 0..<all.count where scope.first.contains(all.columns[0].ints[row]) { rows.append(row: all.row(row)) }
        return MaterializedRelation(rows)
    }
}
