import Foundation
@testable import PipelineKit
@testable import Stages
import XCTest

/// windowAggregate on small in-memory inputs shaped like the Dost pipeline's
/// `userprogram` stage (no PostgreSQL).
final class WindowAggregateTests: XCTestCase {
    typealias F = UnitFixture

    // MARK: fixture

    /// The `userprogram` stage of pipelines/dost_warehouse.yaml with its
    /// variables substituted.
    static func dostYAML(asOf: String = "2030-01-01", timezone: String = "Asia/Kolkata", minListen: Int = 30) -> String {
        """
        group_by: [user_id, program_id]
        anchor: {from: experiences, earliest: created_on, tie_break: id}
        timezone: \(timezone)
        as_of: \(asOf)
        attributes:
          created_on: {lookup: user_lookup, key: user_id, column: created_on, required: true}
          program_start: {anchor: created_on}
          partnerorg_id: {lookup: partnerorg, key: provider_number, column: id}
          duration_days: {lookup: programlist, key: program_id, column: duration_days}
        dates:
          start_date: {days: 0}
          month1date: {months: 1}
          month3date: {months: 3}
          month5date: {months: 5}
          programenddate: {days_from: duration_days}
        events: {from: calls, time: call_start_time}
        windows:
          month1: {end: month1date}
          month3: {end: month3date}
          eop: {end: programenddate}
        measures:
          completed_lessons:
            count_distinct: programseq_id
            where: {column: listen_secs, at_least: "\(minListen)"}
          completed_minutes: {sum: listen_secs, clamp_min: 0, divide_by: 60, scale: 2}
          scheduled: {count_lookup: lessons_by_program, key: program_id, column: day_offset}
        """
    }

    static let dostInputKinds: [String: OutputKind] = [
        "experiences": .relation, "calls": .relation, "user_lookup": .lookup,
        "partnerorg": .lookup, "programlist": .lookup, "lessons_by_program": .lookup,
    ]

    static let experienceFields = [Field("id", .bigint), Field("user_id", .bigint), Field("program_id", .int),
                                   Field("provider_number", .text), Field("created_on", .timestamptz)]
    static let callFields = [Field("user_id", .bigint), Field("program_id", .int), Field("listen_secs", .int),
                             Field("call_start_time", .timestamptz), Field("programseq_id", .bigint)]

    /// The inputs of the `userprogram` stage, as rows.
    struct Inputs {
        var experiences: [[Value]] = []
        var calls: [[Value]] = []
        /// When set, calls are delivered in these batches instead of one.
        var callBatches: [[[Value]]]?
        var users: [[Value]] = []
        var partners: [[Value]] = [
            [.int(501), .text("Acme"), .text("+91 80 4710 0037")],
            [.int(502), .text("Bolt"), .text("9876543210")],
            [.int(503), .text("Crux"), .text("1111111111")],
        ]
        var programs: [[Value]] = [
            [.int(10), .int(20), .int(20), .int(30)],
            [.int(12), .int(20), .int(20), .int(60)],
        ]
        var lessonDays: [[Value]] = []

        /// An experience; its user is added to the user lookup unless told otherwise.
        mutating func experience(id: Int64, user: Int64, program: Int64, provider: String? = nil, created: Int64?,
                                 registerUser: Bool = true) {
            experiences.append([.int(id), .int(user), .int(program), provider.map(Value.text) ?? .null,
                                created.map(Value.int) ?? .null])
            if registerUser, !users.contains(where: { $0[0] == .int(user) }) {
                users.append([.int(user), .int(created ?? 0)])
            }
        }

        mutating func call(user: Int64?, program: Int64? = 10, listen: Int64?, at time: Int64?, seq: Int64?) {
            calls.append([user.map(Value.int) ?? .null, program.map(Value.int) ?? .null, listen.map(Value.int) ?? .null,
                          time.map(Value.int) ?? .null, seq.map(Value.int) ?? .null])
        }

        var outputs: [String: StageOutput] {
            let callsOutput: StageOutput
            if let callBatches {
                callsOutput = .relation(MultiBatchRelation(batches: callBatches.map { F.batch(WindowAggregateTests.callFields, $0) }))
            } else {
                callsOutput = F.relation(WindowAggregateTests.callFields, calls)
            }
            return [
                "experiences": F.relation(WindowAggregateTests.experienceFields, experiences),
                "calls": callsOutput,
                "user_lookup": F.lookup([Field("id", .bigint), Field("created_on", .timestamptz)], users, key: ["id"]),
                "partnerorg": F.lookup([Field("id", .bigint), Field("name", .text), Field("provider_number", .text)], partners,
                                       key: ["provider_number"],
                                       normalization: KeyNormalization(steps: [.digits, .last(10)]),
                                       defaultRow: [.int(0), .text("Direct"), .null]),
                "programlist": F.lookup([Field("program_id", .int), Field("max_seq", .int), Field("lessons", .int),
                                         Field("duration_days", .int)], programs, key: ["program_id"]),
                "lessons_by_program": F.lookup([Field("program_id", .int), Field("day_offset", .int)], lessonDays,
                                               key: ["program_id"]),
            ]
        }
    }

    func runStage(_ stage: WindowAggregate, _ inputs: [String: StageOutput],
                  file: StaticString = #filePath, line: UInt = #line) throws -> (Batch, StageMetrics) {
        let metrics = StageMetrics()
        let output = try stage.run(F.context(stageID: "userprogram", inputs: inputs, metrics: metrics))
        guard case .relation = output else {
            XCTFail("windowAggregate should produce a relation, got \(output.kind)", file: file, line: line)
            throw StageFailure.config("wrong output kind")
        }
        return (try F.rows(of: output), metrics)
    }

    func runDost(_ inputs: Inputs, asOf: String = "2030-01-01", file: StaticString = #filePath, line: UInt = #line) throws
        -> (Batch, StageMetrics) {
        let stage = try F.make(WindowAggregate.self, "userprogram", yaml: Self.dostYAML(asOf: asOf),
                               inputs: Self.dostInputKinds, file: file, line: line)
        return try runStage(stage, inputs.outputs, file: file, line: line)
    }

    func row(_ batch: Batch, user: Int64, program: Int64 = 10, file: StaticString = #filePath, line: UInt = #line) throws -> Int {
        try XCTUnwrap(batch.rowMatching(["user_id": user, "program_id": program]),
                      "no output row for (\(user), \(program))", file: file, line: line)
    }

    func date(_ year: Int, _ month: Int, _ day: Int) -> Value { .int(F.day(year, month, day)) }

    /// Local midnight of 2020-01-01 in Asia/Kolkata is 2019-12-31 18:30 UTC;
    /// an anchor at 00:00 UTC is 05:30 local, well inside the day.
    let jan1 = UnitFixture.micros(2020, 1, 1)

    // MARK: schema

    func testOutputColumnsAreKeysAttributesDatesThenWindowMeasures() throws {
        var inputs = Inputs()
        inputs.experience(id: 1, user: 1, program: 10, created: jan1)
        let (batch, _) = try runDost(inputs)
        XCTAssertEqual(batch.schema.map(\.name), [
            "user_id", "program_id", "created_on", "program_start", "partnerorg_id", "duration_days",
            "start_date", "month1date", "month3date", "month5date", "programenddate",
            "month1_completed_lessons", "month1_completed_minutes", "month1_scheduled",
            "month3_completed_lessons", "month3_completed_minutes", "month3_scheduled",
            "eop_completed_lessons", "eop_completed_minutes", "eop_scheduled",
        ])
        XCTAssertEqual(batch.schema.map(\.type), [
            .bigint, .int, .timestamptz, .timestamptz, .bigint, .int,
            .date, .date, .date, .date, .date,
            .int, .numeric(precision: 12, scale: 2), .int,
            .int, .numeric(precision: 12, scale: 2), .int,
            .int, .numeric(precision: 12, scale: 2), .int,
        ])
        XCTAssertEqual(batch.count, 1)
    }

    // MARK: dates

    func testMonthsAreAddedWithEndOfMonthClamping() throws {
        var inputs = Inputs()
        // Local (Asia/Kolkata) midnight starting Jan 31 is 18:30 UTC on Jan 30.
        inputs.experience(id: 1, user: 1, program: 10, created: F.micros(2020, 1, 30, 18, 30, 0))
        inputs.experience(id: 2, user: 2, program: 10, created: F.micros(2021, 1, 30, 18, 30, 0))
        let (batch, _) = try runDost(inputs)
        let leap = try row(batch, user: 1), common = try row(batch, user: 2)

        XCTAssertEqual(batch.cell(leap, "start_date"), date(2020, 1, 31))
        XCTAssertEqual(batch.cell(leap, "month1date"), date(2020, 2, 29))
        XCTAssertEqual(batch.cell(leap, "month3date"), date(2020, 4, 30))
        XCTAssertEqual(batch.cell(leap, "month5date"), date(2020, 6, 30))
        XCTAssertEqual(batch.cell(leap, "programenddate"), date(2020, 3, 1), "Jan 31 2020 + 30 days")

        XCTAssertEqual(batch.cell(common, "start_date"), date(2021, 1, 31))
        XCTAssertEqual(batch.cell(common, "month1date"), date(2021, 2, 28))
        XCTAssertEqual(batch.cell(common, "month3date"), date(2021, 4, 30))
        XCTAssertEqual(batch.cell(common, "month5date"), date(2021, 6, 30))
        XCTAssertEqual(batch.cell(common, "programenddate"), date(2021, 3, 2), "Jan 31 2021 + 30 days")
    }

    func testStartDateIsTheAnchorsLocalDateInTheTimeZone() throws {
        var inputs = Inputs()
        inputs.experience(id: 1, user: 1, program: 10, created: F.micros(2020, 1, 1, 18, 29, 59)) // 23:59:59 IST Jan 1
        inputs.experience(id: 2, user: 2, program: 10, created: F.micros(2020, 1, 1, 18, 30, 0))  // 00:00:00 IST Jan 2
        let (batch, _) = try runDost(inputs)
        let before = try row(batch, user: 1), after = try row(batch, user: 2)
        XCTAssertEqual(batch.cell(before, "start_date"), date(2020, 1, 1))
        XCTAssertEqual(batch.cell(before, "month1date"), date(2020, 2, 1))
        XCTAssertEqual(batch.cell(after, "start_date"), date(2020, 1, 2))
        XCTAssertEqual(batch.cell(after, "month1date"), date(2020, 2, 2))
        // The instants themselves are passed through unchanged.
        XCTAssertEqual(batch.cell(before, "program_start"), .int(F.micros(2020, 1, 1, 18, 29, 59)))
        XCTAssertEqual(batch.cell(after, "created_on"), .int(F.micros(2020, 1, 1, 18, 30, 0)))
    }

    func testAnEventFallsInAWindowByItsLocalDay() throws {
        var inputs = Inputs()
        inputs.experience(id: 1, user: 1, program: 10, created: jan1) // start Jan 1, month1 ends Feb 1 (local)
        // 00:00:00 IST on the start day: inside.
        inputs.call(user: 1, listen: 60, at: F.micros(2019, 12, 31, 18, 30, 0), seq: 1)
        // 23:59:59 IST on Dec 31, the day before the start: outside.
        inputs.call(user: 1, listen: 60, at: F.micros(2019, 12, 31, 18, 29, 59), seq: 2)
        // 23:59:59 IST on Jan 31, the day before month1 ends: inside month1.
        inputs.call(user: 1, listen: 60, at: F.micros(2020, 1, 31, 18, 29, 59), seq: 3)
        // 00:00:00 IST on Feb 1, month1's end: outside month1, inside month3.
        inputs.call(user: 1, listen: 60, at: F.micros(2020, 1, 31, 18, 30, 0), seq: 4)
        let (batch, metrics) = try runDost(inputs)
        let r = try row(batch, user: 1)
        XCTAssertEqual(batch.cell(r, "month1_completed_lessons"), .int(2))
        XCTAssertEqual(batch.cell(r, "month1_completed_minutes"), .int(200))
        XCTAssertEqual(batch.cell(r, "month3_completed_lessons"), .int(3))
        XCTAssertEqual(batch.cell(r, "month3_completed_minutes"), .int(300))
        XCTAssertEqual(metrics.excluded, ["event_before_start": 1])
    }

    // MARK: measures

    func testCompletedLessonsCountDistinctLessonsThatReachMinListen() throws {
        var inputs = Inputs()
        inputs.experience(id: 1, user: 1, program: 10, created: jan1)
        let day = F.micros(2020, 1, 10, 6)
        inputs.call(user: 1, listen: 45, at: day, seq: 101)   // counted
        inputs.call(user: 1, listen: 60, at: day + 1, seq: 101) // same lesson again: counted once
        inputs.call(user: 1, listen: 29, at: day + 2, seq: 102) // min - 1: not counted
        inputs.call(user: 1, listen: 30, at: day + 3, seq: 103) // exactly min: counted
        inputs.call(user: 1, listen: 40, at: day + 4, seq: nil) // no lesson, but minutes
        inputs.call(user: 1, listen: nil, at: day + 5, seq: 104) // NULL listen: no lesson, 0 minutes
        inputs.call(user: 1, listen: -20, at: day + 6, seq: 105) // negative: no lesson, clamped to 0 minutes
        let (batch, _) = try runDost(inputs)
        let r = try row(batch, user: 1)
        // Lessons 101 and 103; minutes (45 + 60 + 29 + 30 + 40 + 0 + 0) / 60 = 204 / 60 = 3.40.
        for window in ["month1", "month3", "eop"] {
            XCTAssertEqual(batch.cell(r, "\(window)_completed_lessons"), .int(2), window)
            XCTAssertEqual(batch.cell(r, "\(window)_completed_minutes"), .int(340), window)
        }
    }

    func testNullProgramseqAddsMinutesButNoLesson() throws {
        var inputs = Inputs()
        inputs.experience(id: 1, user: 1, program: 10, created: jan1)
        inputs.call(user: 1, listen: 90, at: F.micros(2020, 1, 5), seq: nil)
        inputs.call(user: 1, listen: 90, at: F.micros(2020, 1, 6), seq: nil)
        let (batch, _) = try runDost(inputs)
        let r = try row(batch, user: 1)
        XCTAssertEqual(batch.cell(r, "month1_completed_lessons"), .int(0))
        XCTAssertEqual(batch.cell(r, "month1_completed_minutes"), .int(300))
    }

    func testNegativeAndNullListenSecsAddZeroMinutesWithClampMinZero() throws {
        var inputs = Inputs()
        inputs.experience(id: 1, user: 1, program: 10, created: jan1)
        inputs.call(user: 1, listen: 120, at: F.micros(2020, 1, 5), seq: 1)
        inputs.call(user: 1, listen: -60, at: F.micros(2020, 1, 5, 1), seq: 2)
        inputs.call(user: 1, listen: nil, at: F.micros(2020, 1, 5, 2), seq: 3)
        inputs.call(user: 1, listen: Int64(Int32.min), at: F.micros(2020, 1, 5, 3), seq: 4)
        let (batch, _) = try runDost(inputs)
        let r = try row(batch, user: 1)
        XCTAssertEqual(batch.cell(r, "month1_completed_minutes"), .int(200), "only the 120 s call adds minutes")
        XCTAssertEqual(batch.cell(r, "month1_completed_lessons"), .int(1))
    }

    func testExcludedEventsAreCountedPerRule() throws {
        var inputs = Inputs()
        inputs.experience(id: 1, user: 1, program: 10, created: jan1) // month1 Feb 1, month3 Apr 1, eop Jan 31
        inputs.call(user: 1, listen: 60, at: F.micros(2020, 1, 5), seq: 1)                // counted
        inputs.call(user: 1, listen: 600, at: nil, seq: 2)                                 // event_null_time
        inputs.call(user: 99, listen: 600, at: F.micros(2020, 1, 5), seq: 3)               // event_without_group
        inputs.call(user: 1, program: 11, listen: 600, at: F.micros(2020, 1, 5), seq: 4)   // event_without_group
        inputs.call(user: 1, listen: 600, at: F.micros(2019, 12, 31, 18, 29, 59), seq: 5)  // event_before_start
        inputs.call(user: nil, listen: 600, at: F.micros(2020, 1, 5), seq: 6)              // event_null_key
        inputs.call(user: 1, program: nil, listen: 600, at: F.micros(2020, 1, 5), seq: 7)  // event_null_key
        inputs.call(user: 1, listen: 600, at: F.micros(2020, 6, 15), seq: 8)               // event_after_windows
        let (batch, metrics) = try runDost(inputs)
        XCTAssertEqual(metrics.excluded, [
            "event_null_time": 1, "event_without_group": 2, "event_before_start": 1,
            "event_null_key": 2, "event_after_windows": 1,
        ])
        let r = try row(batch, user: 1)
        XCTAssertEqual(batch.cell(r, "month1_completed_lessons"), .int(1))
        XCTAssertEqual(batch.cell(r, "month3_completed_minutes"), .int(100))
        XCTAssertEqual(batch.count, 1)
        XCTAssertEqual(metrics.rowsIn, 1 + 8, "anchor rows plus event rows are read")
        XCTAssertEqual(metrics.rowsOut, 1)
    }

    func testWindowsEndingAfterAsOfAreOpenWithNullMeasures() throws {
        var inputs = Inputs()
        inputs.experience(id: 1, user: 1, program: 10, created: jan1) // month1 Feb 1, month3 Apr 1, eop Jan 31
        inputs.call(user: 1, listen: 60, at: F.micros(2020, 1, 5), seq: 1)
        inputs.lessonDays = [[.int(10), .int(0)]]

        let (onEnd, _) = try runDost(inputs, asOf: "2020-02-01")
        var r = try row(onEnd, user: 1)
        XCTAssertEqual(onEnd.cell(r, "month1_completed_lessons"), .int(1), "end == as_of is closed")
        XCTAssertEqual(onEnd.cell(r, "month1_completed_minutes"), .int(100))
        XCTAssertEqual(onEnd.cell(r, "month1_scheduled"), .int(1))
        XCTAssertEqual(onEnd.cell(r, "eop_completed_lessons"), .int(1))
        for measure in ["completed_lessons", "completed_minutes", "scheduled"] {
            XCTAssertEqual(onEnd.cell(r, "month3_\(measure)"), .null, "month3 ends after as_of: \(measure)")
        }
        XCTAssertEqual(onEnd.cell(r, "month3date"), date(2020, 4, 1), "dates are output for open windows too")

        let (dayBefore, _) = try runDost(inputs, asOf: "2020-01-31")
        r = try row(dayBefore, user: 1)
        XCTAssertEqual(dayBefore.cell(r, "month1_completed_lessons"), .null, "end one day after as_of is open")
        XCTAssertEqual(dayBefore.cell(r, "month1_completed_minutes"), .null)
        XCTAssertEqual(dayBefore.cell(r, "month1_scheduled"), .null)
        XCTAssertEqual(dayBefore.cell(r, "eop_completed_lessons"), .int(1), "eop ends Jan 31 == as_of")
    }

    func testAMissingProgramLengthGivesNullEndDateAndNullMeasures() throws {
        var inputs = Inputs()
        inputs.programs = [[.int(10), .int(20), .int(20), .null]] // duration_days NULL; program 20 not listed at all
        inputs.experience(id: 1, user: 1, program: 10, created: jan1)
        inputs.experience(id: 2, user: 2, program: 20, created: jan1)
        inputs.call(user: 1, program: 10, listen: 60, at: F.micros(2020, 1, 5), seq: 1)
        inputs.call(user: 2, program: 20, listen: 60, at: F.micros(2020, 1, 5), seq: 1)
        inputs.lessonDays = [[.int(10), .int(0)], [.int(20), .int(0)]]
        let (batch, _) = try runDost(inputs)
        XCTAssertEqual(batch.count, 2, "programlist is not required")
        for user: Int64 in [1, 2] {
            let r = try row(batch, user: user, program: user == 1 ? 10 : 20)
            XCTAssertEqual(batch.cell(r, "duration_days"), .null)
            XCTAssertEqual(batch.cell(r, "programenddate"), .null)
            XCTAssertEqual(batch.cell(r, "eop_completed_lessons"), .null)
            XCTAssertEqual(batch.cell(r, "eop_completed_minutes"), .null)
            XCTAssertEqual(batch.cell(r, "eop_scheduled"), .null)
            XCTAssertEqual(batch.cell(r, "month1_completed_lessons"), .int(1))
            XCTAssertEqual(batch.cell(r, "month1_scheduled"), .int(1))
        }
    }

    // MARK: anchors and attributes

    func testTheEarliestAnchorRowWinsAndTiesGoToTheLowestTieBreak() throws {
        var inputs = Inputs()
        let feb1 = F.micros(2020, 2, 1)
        // (1, 10): the earliest instant is shared by ids 4 and 3; 3 comes later in the input but wins.
        inputs.experience(id: 7, user: 1, program: 10, provider: "9876543210", created: F.micros(2020, 3, 1))
        inputs.experience(id: 4, user: 1, program: 10, provider: "1111111111", created: feb1)
        inputs.experience(id: 3, user: 1, program: 10, provider: "080-4710-0037", created: feb1)
        inputs.experience(id: 2, user: 1, program: 10, provider: "1111111111", created: F.micros(2020, 2, 15))
        inputs.experience(id: 1, user: 1, program: 10, provider: "1111111111", created: nil) // ignored: no time
        // (2, 10): a tie where the lowest id comes first.
        inputs.experience(id: 1, user: 2, program: 10, provider: "9876543210", created: feb1)
        inputs.experience(id: 9, user: 2, program: 10, provider: "1111111111", created: feb1)
        // (3, 10): the earliest row wins even with a higher id.
        inputs.experience(id: 1, user: 3, program: 10, provider: "9876543210", created: F.micros(2020, 3, 1))
        inputs.experience(id: 8, user: 3, program: 10, provider: "+91 1111111111", created: feb1)
        // (4, 10) and (5, 10): no partner → the default row's id 0.
        inputs.experience(id: 1, user: 4, program: 10, provider: nil, created: feb1)
        inputs.experience(id: 1, user: 5, program: 10, provider: "5555555555", created: feb1)
        // An anchor row without a key.
        inputs.experiences.append([.int(1), .null, .int(10), .null, .int(feb1)])

        let (batch, metrics) = try runDost(inputs)
        XCTAssertEqual(batch.count, 5)
        let expected: [(user: Int64, partner: Int64, start: Int64)] = [
            (1, 501, feb1), (2, 502, feb1), (3, 503, feb1), (4, 0, feb1), (5, 0, feb1),
        ]
        for (user, partner, start) in expected {
            let r = try row(batch, user: user)
            XCTAssertEqual(batch.cell(r, "partnerorg_id"), .int(partner), "user \(user)")
            XCTAssertEqual(batch.cell(r, "program_start"), .int(start), "user \(user)")
            XCTAssertEqual(batch.cell(r, "start_date"), date(2020, 2, 1), "user \(user)")
        }
        XCTAssertEqual(metrics.excluded, ["anchor_null_time": 1, "anchor_null_key": 1])
        // Rows come out ordered by the group key.
        XCTAssertEqual((0..<batch.count).map { batch.cell($0, "user_id") }, [1, 2, 3, 4, 5].map { Value.int($0) })
    }

    func testARequiredLookupMissDropsTheGroupAndIsCounted() throws {
        var inputs = Inputs()
        inputs.experience(id: 1, user: 1, program: 10, created: jan1)
        inputs.experience(id: 2, user: 2, program: 10, created: jan1, registerUser: false)
        inputs.call(user: 2, listen: 60, at: F.micros(2020, 1, 5), seq: 1)
        let (batch, metrics) = try runDost(inputs)
        XCTAssertEqual(batch.count, 1)
        XCTAssertEqual(batch.cell(0, "user_id"), .int(1))
        XCTAssertEqual(metrics.excluded["created_on_not_found"], 1)
        XCTAssertEqual(metrics.excluded["event_without_group"], 1, "events of a dropped group have no group")
    }

    func testCreatedOnComesFromTheUserLookupNotTheAnchor() throws {
        var inputs = Inputs()
        inputs.experience(id: 1, user: 1, program: 10, created: jan1, registerUser: false)
        inputs.users = [[.int(1), .int(F.micros(2019, 6, 1, 12))]]
        let (batch, _) = try runDost(inputs)
        XCTAssertEqual(batch.cell(0, "created_on"), .int(F.micros(2019, 6, 1, 12)))
        XCTAssertEqual(batch.cell(0, "program_start"), .int(jan1))
    }

    // MARK: rounding of minutes

    /// round(x / 60, 2) as PostgreSQL's numeric computes it, with Foundation's
    /// Decimal (independent of PipelineKit's integer arithmetic), in hundredths.
    static func postgresRoundedMinutes(_ seconds: Int) -> Int64 {
        var exact = Decimal(seconds) / Decimal(60)
        var rounded = Decimal()
        NSDecimalRound(&rounded, &exact, 2, .plain)
        return (rounded * 100 as NSDecimalNumber).int64Value
    }

    static let minutesYAML = """
        group_by: user_id
        anchor: {from: experiences, earliest: created_on}
        timezone: UTC
        as_of: 2030-01-01
        dates: {window_end: {days: 10}}
        events: {from: calls, time: call_start_time}
        windows: {w: {end: window_end}}
        measures:
          minutes: {sum: listen_secs, CLAMP divide_by: 60, scale: 2}
        """

    func minutes(forSums sums: [Int64], clamp: Bool) throws -> [Int64: Value] {
        let yaml = Self.minutesYAML.replacingOccurrences(of: "CLAMP", with: clamp ? "clamp_min: 0," : "")
        let stage = try F.make(WindowAggregate.self, "minutes", yaml: yaml,
                               inputs: ["experiences": .relation, "calls": .relation])
        var experiences: [[Value]] = [], calls: [[Value]] = []
        let start = F.micros(2020, 1, 1)
        for (index, sum) in sums.enumerated() {
            let user = Int64(index + 1)
            experiences.append([.int(user), .int(user), .int(1), .null, .int(start)])
            // Two calls per group, so the sum is really a sum.
            let first = sum / 2
            calls.append([.int(user), .int(1), .int(first), .int(start + 1_000_000), .int(1)])
            calls.append([.int(user), .int(1), .int(sum - first), .int(start + 2_000_000), .int(2)])
        }
        let (batch, _) = try runStage(stage, [
            "experiences": F.relation(Self.experienceFields, experiences),
            "calls": F.relation(Self.callFields, calls),
        ])
        XCTAssertEqual(batch.column("w_minutes")?.field.type, .numeric(precision: 12, scale: 2))
        var result: [Int64: Value] = [:]
        for row in 0..<batch.count {
            guard case .int(let user) = batch.cell(row, "user_id") else { continue }
            result[sums[Int(user) - 1]] = batch.cell(row, "w_minutes")
        }
        return result
    }

    func testMinutesRoundHalfAwayFromZeroAtTheDocumentedPoints() throws {
        let pins: [Int64: Int64] = [3: 5, 33: 55, 27: 45, 57: 95, 1: 2, 2: 3, 29: 48, 30: 50, 31: 52, 599: 998, 600: 1000, 0: 0]
        let found = try minutes(forSums: Array(pins.keys).sorted(), clamp: true)
        for (seconds, hundredths) in pins {
            XCTAssertEqual(found[seconds], .int(hundredths), "\(seconds) s")
        }
    }

    func testMinutesMatchPostgresRoundingForEverySumUpTo600() throws {
        let sums = Array(Int64(1)...600)
        let found = try minutes(forSums: sums, clamp: true)
        XCTAssertEqual(found.count, 600)
        for seconds in sums {
            XCTAssertEqual(found[seconds], .int(Self.postgresRoundedMinutes(Int(seconds))), "\(seconds) s")
        }
    }

    func testNegativeSumsWithoutClampRoundAwayFromZero() throws {
        let sums = Array(Int64(-600)...(-1))
        let found = try minutes(forSums: sums, clamp: false)
        XCTAssertEqual(found[-1], .int(-2))
        XCTAssertEqual(found[-3], .int(-5))
        XCTAssertEqual(found[-33], .int(-55))
        for seconds in sums {
            XCTAssertEqual(found[seconds], .int(Self.postgresRoundedMinutes(Int(seconds))), "\(seconds) s")
        }
    }

    // MARK: count_lookup

    func testScheduledCountsLessonOffsetsStrictlyBelowTheWindowLength() throws {
        var inputs = Inputs()
        inputs.programs = [[.int(10), .int(7), .int(7), .int(60)], [.int(12), .int(0), .int(0), .int(60)]]
        let offsets: [Int64?] = [60, 0, 31, 6, nil, 59, 30]
        inputs.lessonDays = offsets.map { offset -> [Value] in [.int(10), offset.map(Value.int) ?? .null] }
        inputs.lessonDays.append([.int(11), .int(0)])
        // Local midnight Jan 1 2021 / Feb 1 2021 in Asia/Kolkata.
        inputs.experience(id: 1, user: 1, program: 10, created: F.micros(2020, 12, 31, 18, 30))
        inputs.experience(id: 2, user: 3, program: 10, created: F.micros(2021, 1, 31, 18, 30))
        inputs.experience(id: 3, user: 2, program: 12, created: F.micros(2020, 12, 31, 18, 30))
        let (batch, _) = try runDost(inputs)

        let jan = try row(batch, user: 1)
        XCTAssertEqual(batch.cell(jan, "month1_scheduled"), .int(3), "31 days: offsets 0, 6, 30")
        XCTAssertEqual(batch.cell(jan, "month3_scheduled"), .int(6), "90 days: every non-NULL offset")
        XCTAssertEqual(batch.cell(jan, "eop_scheduled"), .int(5), "60 days: 60 itself is not below 60")

        let feb = try row(batch, user: 3)
        XCTAssertEqual(batch.cell(feb, "month1_scheduled"), .int(2), "Feb 2021 has 28 days: offsets 0, 6")
        XCTAssertEqual(batch.cell(feb, "month3_scheduled"), .int(6), "89 days")
        XCTAssertEqual(batch.cell(feb, "eop_scheduled"), .int(5))

        let none = try row(batch, user: 2, program: 12)
        for window in ["month1", "month3", "eop"] {
            XCTAssertEqual(batch.cell(none, "\(window)_scheduled"), .int(0), "program without lessons: \(window)")
        }
    }

    // MARK: streaming

    func testDistinctLessonsAreCountedAcrossBatchesAndManyLessonIDs() throws {
        var inputs = Inputs()
        inputs.experience(id: 1, user: 1, program: 10, created: jan1)
        inputs.experience(id: 2, user: 2, program: 10, created: jan1)
        let at = F.micros(2020, 1, 5)
        func call(_ user: Int64, _ seq: Int64) -> [Value] { [.int(user), .int(10), .int(30), .int(at), .int(seq)] }
        let first = [call(2, 5), call(2, 6)] + (1000..<1200).map { call(1, $0) }
        let second = (1000..<1050).map { call(1, $0) } + [call(2, 1000), call(2, 5), call(2, 1199)]
        inputs.callBatches = [first, second]
        let (batch, metrics) = try runDost(inputs)
        XCTAssertEqual(batch.cell(try row(batch, user: 1), "month1_completed_lessons"), .int(200))
        XCTAssertEqual(batch.cell(try row(batch, user: 2), "month1_completed_lessons"), .int(4))
        XCTAssertEqual(batch.cell(try row(batch, user: 1), "month1_completed_minutes"), .int(250 * 50))
        XCTAssertEqual(metrics.rowsIn, 2 + first.count + second.count)
    }

    // MARK: two-column groups

    func testOneUserInManyProgramsMakesIndependentGroups() throws {
        let yaml = """
            group_by: [user_id, program_id]
            anchor: {from: experiences, earliest: created_on}
            timezone: UTC
            as_of: 2030-01-01
            dates: {end: {days: 10}}
            events: {from: calls, time: call_start_time}
            windows: {w: {end: end}}
            measures:
              secs: {sum: listen_secs}
              calls: {count: true}
            """
        let stage = try F.make(WindowAggregate.self, "pairs", yaml: yaml, inputs: ["experiences": .relation, "calls": .relation])
        let start = F.micros(2020, 1, 1)
        var experiences: [[Value]] = [], calls: [[Value]] = []
        for user in Int64(1)...20 {
            for program in Int64(1)...15 {
                experiences.append([.int(user * 100 + program), .int(user), .int(program), .null, .int(start)])
                // A different total per pair: user·1000 + program seconds, over `program` calls.
                for call in 0..<program {
                    let listen = call == 0 ? user * 1000 + program - (program - 1) : 1
                    calls.append([.int(user), .int(program), .int(listen), .int(start + call), .null])
                }
            }
        }
        calls.append([.int(1), .int(16), .int(5), .int(start), .null]) // user 1 has no program 16
        calls.append([.int(21), .int(1), .int(5), .int(start), .null]) // no user 21
        let metrics = StageMetrics()
        let output = try stage.run(F.context(stageID: "pairs", inputs: [
            "experiences": F.relation(Self.experienceFields, experiences),
            "calls": F.relation(Self.callFields, calls),
        ], metrics: metrics))
        let batch = try F.rows(of: output)
        XCTAssertEqual(batch.count, 300)
        for user in Int64(1)...20 {
            for program in Int64(1)...15 {
                let r = try XCTUnwrap(batch.rowMatching(["user_id": user, "program_id": program]))
                XCTAssertEqual(batch.cell(r, "w_secs"), .int(user * 1000 + program), "(\(user), \(program))")
                XCTAssertEqual(batch.cell(r, "w_calls"), .int(program), "(\(user), \(program))")
            }
        }
        XCTAssertEqual(metrics.excluded, ["event_without_group": 2])
    }

    // MARK: other measures

    func testCountWithAtMostFilter() throws {
        let yaml = """
            group_by: [user_id]
            anchor: {from: experiences, earliest: created_on}
            timezone: UTC
            as_of: 2030-01-01
            dates: {end: {days: 7}}
            events: {from: calls, time: call_start_time}
            windows: {week: {end: end}}
            measures:
              short_calls: {count: true, where: {column: listen_secs, at_most: 10}}
              calls: {count: true}
            """
        let stage = try F.make(WindowAggregate.self, "counts", yaml: yaml, inputs: ["experiences": .relation, "calls": .relation])
        let start = F.micros(2020, 1, 1)
        let listens: [Value] = [.int(9), .int(10), .int(11), .null, .int(-5)]
        let calls = listens.map { [Value.int(1), .int(1), $0, .int(start), .null] }
        let (batch, _) = try runStage(stage, [
            "experiences": F.relation(Self.experienceFields, [[.int(1), .int(1), .int(1), .null, .int(start)]]),
            "calls": F.relation(Self.callFields, calls),
        ])
        XCTAssertEqual(batch.cell(0, "week_short_calls"), .int(3), "9, 10 and -5; NULL never passes")
        XCTAssertEqual(batch.cell(0, "week_calls"), .int(5))
    }

    // MARK: the shipped pipeline file

    func testTheShippedPipelineConfigMatchesTheConfigPinnedHere() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let pipeline = try PipelineLoader(registry: .standard).load(
            path: root.appendingPathComponent("pipelines/dost_warehouse.yaml").path,
            options: LoadOptions(environment: ["DOST_SOURCE_URL": "postgresql://unit@localhost/source",
                                               "DOST_WAREHOUSE_URL": "postgresql://unit@localhost/warehouse"],
                                 asOf: CivilDate(year: 2020, month: 3, day: 1)))
        let shipped = try XCTUnwrap(pipeline.stage("userprogram")?.implementation as? WindowAggregate)
        let pinned = try F.make(WindowAggregate.self, "userprogram", yaml: Self.dostYAML(asOf: "2020-03-01"),
                                inputs: Self.dostInputKinds)

        var inputs = Inputs()
        inputs.lessonDays = [[.int(10), .int(0)], [.int(10), .int(29)], [.int(10), .int(31)]]
        inputs.experience(id: 1, user: 1, program: 10, provider: "08047100037", created: F.micros(2020, 1, 30, 18, 30))
        inputs.experience(id: 2, user: 2, program: 12, created: F.micros(2020, 1, 1, 18, 29, 59))
        for (index, listen) in [29, 30, 31, -4].enumerated() {
            inputs.call(user: 1, listen: Int64(listen), at: F.micros(2020, 2, 10, Int(index)), seq: Int64(index % 2))
        }
        inputs.call(user: 2, program: 12, listen: 45, at: F.micros(2020, 1, 31, 18, 29, 59), seq: 7)
        let (expected, _) = try runStage(pinned, inputs.outputs)
        let (actual, _) = try runStage(shipped, inputs.outputs)
        XCTAssertEqual(actual.schema, expected.schema)
        XCTAssertEqual((0..<actual.count).map(actual.row), (0..<expected.count).map(expected.row))
        // And a few absolute values, so this test does not only compare the stage with itself.
        let r = try row(expected, user: 1)
        XCTAssertEqual(expected.cell(r, "partnerorg_id"), .int(501))
        XCTAssertEqual(expected.cell(r, "month1date"), date(2020, 2, 29))
        // seq 0: 29 s and 31 s; seq 1: 30 s and -4 s → both lessons complete; (29 + 30 + 31 + 0) / 60 = 1.50.
        XCTAssertEqual(expected.cell(r, "month1_completed_lessons"), .int(2))
        XCTAssertEqual(expected.cell(r, "month1_completed_minutes"), .int(150))
        let u2 = try row(expected, user: 2, program: 12)
        XCTAssertEqual(expected.cell(u2, "start_date"), date(2020, 1, 1))
        XCTAssertEqual(expected.cell(u2, "month1_completed_minutes"), .int(75))
        XCTAssertEqual(expected.cell(u2, "month3_completed_minutes"), .null, "month3 ends Apr 1, after as_of")
    }

    // MARK: unusual inputs fail clearly

    /// One group `g` anchored at `t`, a month-1 window, and `measures` over events (g, t, v).
    /// A stage grouping anchors `a` by `g` with one window ending at date `m1` (flow-mapping YAML given).
    private func smallYAML(dates: String = "{m1: {months: 1}}", attributes: String? = nil, measures: String = "{n: {count: true}}") -> String {
        """
        group_by: [g]
        anchor: {from: a, earliest: t}
        timezone: UTC
        as_of: 2030-01-01
        \(attributes.map { "attributes: \($0)\n" } ?? "")dates: \(dates)
        events: {from: e, time: t}
        windows: {month1: {end: m1}}
        measures: \(measures)
        """
    }

    private func runSmall(measures: String, eventFields: [Field], events: [[Value]]) throws -> Batch {
        let yaml = smallYAML(measures: "\n" + measures)
        let stage = try F.make(WindowAggregate.self, "w", yaml: yaml, inputs: ["a": .relation, "e": .relation])
        return try F.rows(of: try stage.run(F.context(stageID: "w", inputs: [
            "a": F.relation([Field("g", .bigint), Field("t", .timestamptz)], [[.int(1), .int(F.micros(2020, 1, 1, 12))]]),
            "e": F.relation(eventFields, events)])))
    }

    func testASumBeyond64BitsIsADataErrorNotAWrongNumberOrACrash() throws {
        let fields = [Field("g", .bigint), Field("t", .timestamptz), Field("v", .bigint)]
        let wrapping = [[Value.int(1), .int(F.micros(2020, 1, 2)), .int(Int64.max)], [.int(1), .int(F.micros(2020, 1, 3)), .int(1)]]
        let scaled = [[Value.int(1), .int(F.micros(2020, 1, 2)), .int(100_000_000_000_000_000)]]
        // 32-bit values whose clamp lifts them beyond 32 bits: two of them overflowed silently.
        let clamped = [[Value.int(1), .int(F.micros(2020, 1, 2)), .int(1)], [.int(1), .int(F.micros(2020, 1, 3)), .int(2)]]
        let int32 = [Field("g", .bigint), Field("t", .timestamptz), Field("v", .int)]
        for (measure, events, fields) in [("  s: {sum: v}", wrapping, fields), ("  s: {sum: v, divide_by: 60, scale: 2}", scaled, fields),
                                          ("  s: {sum: v, clamp_min: 4611686018427387904}", clamped, int32)] {
            XCTAssertThrowsError(try runSmall(measures: measure, eventFields: fields, events: events), measure) { error in
                guard case StageFailure.data(let message) = error else { return XCTFail("\(error)") }
                XCTAssertEqual(message, "a sum of a window does not fit in 64 bits")
            }
        }
    }

    func testAWhereOnANonIntegerColumnOrATextEventKeyIsAConfigurationError() throws {
        let cases: [(String, [Field], [Value], String)] = [
            ("  n:\n    count: true\n    where: {column: x, at_least: 1}",
             [Field("g", .bigint), Field("t", .timestamptz), Field("x", .double)], [.int(1), .int(F.micros(2020, 1, 2)), .double(5)],
             "where column 'x' must be an integer column, not double precision"),
            ("  n: {count: true}", [Field("g", .text), Field("t", .timestamptz)], [.text("1"), .int(F.micros(2020, 1, 2))],
             "group_by column 'g' of events input 'e' must be an integer column, not text"),
        ]
        for (measures, fields, event, expected) in cases {
            XCTAssertThrowsError(try runSmall(measures: measures, eventFields: fields, events: [event])) { error in
                guard case StageFailure.config(let message) = error else { return XCTFail("\(error)") }
                XCTAssertEqual(message, expected)
            }
        }
    }
    func testADateOffsetBeyondTenThousandYearsIsRejectedAtItsLine() throws {
        for (offset, expected) in [("months: 9223372036854775807", "months must be between -120000 and 120000 (10,000 years), not 9223372036854775807"),
                                   ("months: -9223372036854775808", "months must be between -120000 and 120000 (10,000 years), not -9223372036854775808"),
                                   ("days: -4000000", "days must be between -3660000 and 3660000 (10,000 years), not -4000000")] {
            let yaml = smallYAML(dates: "{m1: {\(offset)}}")
            let (build, sink) = F.build("w", inputs: ["a": .relation, "e": .relation])
            _ = try? WindowAggregate(config: try F.config(yaml), build: build)
            XCTAssertEqual(sink.diagnostics.map(\.message), ["stage 'w': date 'm1': \(expected)"])
            XCTAssertEqual(sink.diagnostics.first?.line, 5)
        }
    }

    func testADaysFromValueBeyondAnyDateIsADataErrorNotACrash() throws {
        let yaml = smallYAML(dates: "{m1: {days_from: length}}", attributes: "{length: {anchor: n}}")
        let stage = try F.make(WindowAggregate.self, "w", yaml: yaml, inputs: ["a": .relation, "e": .relation])
        // The first overflows 64 bits; the second does not, but is no date PostgreSQL (or a truncation) can take.
        for (days, expected) in [(Int64.max, "the start date plus 9223372036854775807 days (attribute 'length') is beyond any date"),
                                 (3_000_000_000, "\(CivilDate(pgDays: 3_000_000_000 + F.day(2020, 1, 1))) is beyond PostgreSQL's dates (4714-11-24 BC to 5874897-12-31)")] {
            let anchors = F.relation([Field("g", .bigint), Field("t", .timestamptz), Field("n", .bigint)],
                                     [[.int(1), .int(F.micros(2020, 1, 1)), .int(days)]])
            XCTAssertThrowsError(try stage.run(F.context(stageID: "w", inputs: [
                "a": anchors, "e": F.relation([Field("g", .bigint), Field("t", .timestamptz)], [])]))) { error in
                guard case StageFailure.data(let message) = error else { return XCTFail("\(error)") }
                XCTAssertEqual(message, "date 'm1': \(expected)")
            }
        }
    }

    func testAFixedOffsetLandingBeforePostgresFirstDateIsADataError() throws {
        let yaml = smallYAML(dates: "{m1: {days: -3660000}}")
        let stage = try F.make(WindowAggregate.self, "w", yaml: yaml, inputs: ["a": .relation, "e": .relation])
        // An anchor in 4000 BC: 10,000 years earlier is no date PostgreSQL stores.
        let start = (CivilDate(year: -3999, month: 1, day: 1).pgDays) * PGTime.microsPerDay
        XCTAssertThrowsError(try stage.run(F.context(stageID: "w", inputs: [
            "a": F.relation([Field("g", .bigint), Field("t", .timestamptz)], [[.int(1), .int(start)]]),
            "e": F.relation([Field("g", .bigint), Field("t", .timestamptz)], [])]))) { error in
            guard case StageFailure.data(let message) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(message.hasPrefix("date 'm1': ") && message.hasSuffix("is beyond PostgreSQL's dates (4714-11-24 BC to 5874897-12-31)"), message)
        }
    }

    func testASumOfADecimalColumnIsInTheColumnsUnitsNotItsHundredths() throws {
        let fields = [Field("g", .bigint), Field("t", .timestamptz), Field("v", .numeric(precision: 10, scale: 2))]
        // 60.00 + 60.00 seconds are 2.00 minutes; the stored hundredths summed as units made 200.00.
        let calls = [[Value.int(1), .int(F.micros(2020, 1, 2)), .int(6000)], [.int(1), .int(F.micros(2020, 1, 3)), .int(6000)]]
        XCTAssertEqual(try runSmall(measures: "  mins: {sum: v, divide_by: 60, scale: 2}", eventFields: fields, events: calls)
            .cell(0, "month1_mins"), .int(200))
        // clamp_min is in the column's units too: -5.50 counts as 0, 3.25 as 3.25.
        let signed = [[Value.int(1), .int(F.micros(2020, 1, 2)), .int(-550)], [.int(1), .int(F.micros(2020, 1, 3)), .int(325)]]
        XCTAssertEqual(try runSmall(measures: "  s: {sum: v, clamp_min: 0, scale: 2}", eventFields: fields, events: signed)
            .cell(0, "month1_s"), .int(325))
    }

    func testDaysFromADecimalOrDateAttributeIsRefusedInsteadOfTakingItsStoredNumberAsDays() throws {
        let stage = try F.make(WindowAggregate.self, "w", yaml: smallYAML(dates: "{m1: {days_from: length}}", attributes: "{length: {anchor: n}}"),
                               inputs: ["a": .relation, "e": .relation])
        for type in [DataType.numeric(precision: 10, scale: 2), .date] {
            let anchors = F.relation([Field("g", .bigint), Field("t", .timestamptz), Field("n", type)],
                                     [[.int(1), .int(F.micros(2020, 1, 1)), .int(3000)]])
            XCTAssertThrowsError(try stage.run(F.context(stageID: "w", inputs: [
                "a": anchors, "e": F.relation([Field("g", .bigint), Field("t", .timestamptz)], [])]))) { error in
                guard case StageFailure.config(let message) = error else { return XCTFail("\(error)") }
                XCTAssertEqual(message, "date 'm1': days_from needs an integer attribute, and 'length' is \(type)")
            }
        }
    }
}
