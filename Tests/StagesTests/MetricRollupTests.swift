import Foundation
@testable import PipelineKit
@testable import Stages
import XCTest

/// metricRollup without PostgreSQL: `run` always writes to the warehouse, so
/// these tests call the stage's pure `rollup(_:)` (internal, reached through
/// `@testable import Stages`) and `MetricRollup.fraction`.
final class MetricRollupTests: XCTestCase {
    typealias F = UnitFixture

    /// The `engagement_metric` stage of pipelines/dost_warehouse.yaml.
    static let dostYAML = """
        from: userprogram
        dimensions:
          partnerorg_id: partnerorg_id
          program_id: program_id
          cohort_month: {column: start_date, truncate: month}
        unpivot:
          name_column: window_name
          groups:
            month1: {lessons: month1_completed_lessons, minutes: month1_completed_minutes, scheduled: month1_scheduled}
            month3: {lessons: month3_completed_lessons, minutes: month3_completed_minutes, scheduled: month3_scheduled}
            eop: {lessons: eop_completed_lessons, minutes: eop_completed_minutes, scheduled: eop_scheduled}
        metrics:
          users: {count: true}
          users_closed: {count_not_null: lessons}
          avg_lessons: {avg: lessons, scale: 2}
          avg_minutes: {avg: minutes, scale: 2}
        levels:
          numerator: lessons
          denominator: scheduled
          thresholds: {high: 1/2, medium: 1/4, low: 1/20, very_low: "0"}
        write: {connection: warehouse, table: dw.engagement_metric, key: [partnerorg_id, program_id, cohort_month, window_name]}
        """

    /// Levels only: one output row per program, so each input row's level can be read alone.
    static let levelsYAML = """
        from: userprogram
        dimensions: {program_id: program_id}
        metrics:
          users: {count: true}
        levels:
          numerator: lessons
          denominator: scheduled
          thresholds: {high: 1/2, medium: 1/4, low: 1/20, very_low: "0"}
        write: {connection: warehouse, table: dw.levels, key: [program_id]}
        """

    /// A rollup counting users by `dimensions` (YAML flow mapping contents), keyed by `key`.
    static func countYAML(dimensions: String, key: String) -> String {
        """
        from: userprogram
        dimensions: {\(dimensions)}
        metrics: {users: {count: true}}
        write: {connection: warehouse, table: dw.t, key: [\(key)]}
        """
    }

    func make(_ yaml: String, file: StaticString = #filePath, line: UInt = #line) throws -> MetricRollup {
        try F.make(MetricRollup.self, "engagement_metric", yaml: yaml, inputs: ["userprogram": .relation],
                   connections: ["warehouse": false], file: file, line: line)
    }

    // MARK: levels

    func testRatioLevelsAtExactBoundaries() throws {
        let stage = try make(Self.levelsYAML)
        // program_id, lessons, scheduled, expected level (nil: none)
        let cases: [(Int64, Value, Value, String?)] = [
            (1, .int(1), .int(2), "high"),            // exactly 1/2
            (2, .int(49), .int(100), "medium"),       // just below 1/2
            (3, .int(499_999), .int(1_000_000), "medium"),
            (4, .int(1), .int(4), "medium"),          // exactly 1/4
            (5, .int(24), .int(100), "low"),          // just below 1/4
            (6, .int(1), .int(20), "low"),            // exactly 1/20
            (7, .int(4), .int(100), "very_low"),      // below 1/20
            (8, .int(0), .int(10), "very_low"),       // exactly 0
            (9, .int(3), .int(2), "high"),            // above 1
            (10, .int(5), .int(0), nil),              // scheduled 0
            (11, .int(5), .null, nil),                // scheduled NULL
            (12, .null, .int(10), nil),               // lessons NULL
            (13, .int(10), .int(20), "high"),         // 10/20 == 1/2
            (14, .int(5), .int(20), "medium"),        // 5/20 == 1/4
        ]
        let input = F.batch([Field("program_id", .int), Field("lessons", .int), Field("scheduled", .int)],
                            cases.map { [.int($0.0), $0.1, $0.2] })
        let output = try stage.rollup(input)
        XCTAssertEqual(output.schema.map(\.name), ["program_id", "users", "high", "medium", "low", "very_low"])
        XCTAssertEqual(output.count, cases.count)
        for (program, lessons, scheduled, level) in cases {
            let r = try XCTUnwrap(output.rowMatching(["program_id": program]))
            for name in ["high", "medium", "low", "very_low"] {
                XCTAssertEqual(output.cell(r, name), .int(name == level ? 1 : 0),
                               "\(lessons)/\(scheduled) → \(level ?? "no level"), column \(name)")
            }
            XCTAssertEqual(output.cell(r, "users"), .int(1))
        }
    }

    func testFractionParsing() {
        XCTAssertTrue(MetricRollup.fraction("1/2")! == (1, 2))
        XCTAssertTrue(MetricRollup.fraction("1/20")! == (1, 20))
        XCTAssertTrue(MetricRollup.fraction("0")! == (0, 1))
        XCTAssertTrue(MetricRollup.fraction(" 3 / 4 ")! == (3, 4))
        for text in ["", "a", "1/0", "-1/2", "1/-2", "1/2/3", "0.5", "1/x"] {
            XCTAssertNil(MetricRollup.fraction(text), "'\(text)'")
        }
    }

    func testFractionRejectsAnEmptyNumeratorOrDenominator() {
        // A threshold typed as "1/" or "/2" is a typo, not the whole number 1 or 2.
        for text in ["/2", "1/", "1//2", "/"] {
            XCTAssertNil(MetricRollup.fraction(text), "'\(text)' parsed as \(String(describing: MetricRollup.fraction(text)))")
        }
    }

    func testThresholdsOutOfOrderAreRejected() throws {
        let yaml = Self.levelsYAML.replacingOccurrences(of: "{high: 1/2, medium: 1/4, low: 1/20, very_low: \"0\"}",
                                                        with: "{low: 1/20, high: 1/2}")
        let (build, sink) = F.build("engagement_metric", inputs: ["userprogram": .relation], connections: ["warehouse": false])
        XCTAssertThrowsError(try MetricRollup(config: try F.config(yaml), build: build))
        XCTAssertEqual(sink.diagnostics.count, 1)
        XCTAssertTrue(sink.diagnostics.first?.message.contains("threshold 'high' is higher than 'low'") ?? false, "\(sink.diagnostics)")
    }

    // MARK: the Dost rollup

    static let userprogramFields = [
        Field("partnerorg_id", .bigint), Field("program_id", .int), Field("start_date", .date),
        Field("month1_completed_lessons", .int), Field("month1_completed_minutes", .numeric(precision: 12, scale: 2)),
        Field("month1_scheduled", .int),
        Field("month3_completed_lessons", .int), Field("month3_completed_minutes", .numeric(precision: 12, scale: 2)),
        Field("month3_scheduled", .int),
        Field("eop_completed_lessons", .int), Field("eop_completed_minutes", .numeric(precision: 12, scale: 2)),
        Field("eop_scheduled", .int),
    ]

    func testDostRollupUnpivotsWindowsAndAveragesWithRounding() throws {
        let stage = try make(Self.dostYAML)
        let jan31 = Value.int(F.day(2020, 1, 31)), jan2 = Value.int(F.day(2020, 1, 2)), feb1 = Value.int(F.day(2020, 2, 1))
        let rows: [[Value]] = [
            // partner 501, program 10, cohort Jan 2020: three users
            [.int(501), .int(10), jan31, .int(1), .int(1), .int(4), .int(2), .int(150), .int(10), .null, .null, .null],
            [.int(501), .int(10), jan2, .int(2), .int(2), .int(4), .null, .null, .null, .null, .null, .null],
            [.int(501), .int(10), jan2, .int(2), .int(-10), .int(0), .null, .null, .null, .null, .null, .null],
            // partner 0, program 10, cohort Feb 2020: one user
            [.int(0), .int(10), feb1, .int(0), .int(0), .int(3), .int(0), .int(0), .int(9), .int(1), .int(5), .int(20)],
        ]
        let output = try stage.rollup(F.batch(Self.userprogramFields, rows))
        XCTAssertEqual(output.schema, [
            Field("partnerorg_id", .bigint), Field("program_id", .int), Field("cohort_month", .date),
            Field("window_name", .text), Field("users", .int), Field("users_closed", .int),
            Field("avg_lessons", .numeric(precision: 12, scale: 2)), Field("avg_minutes", .numeric(precision: 12, scale: 2)),
            Field("high", .int), Field("medium", .int), Field("low", .int), Field("very_low", .int),
        ])
        let jan = Value.int(F.day(2020, 1, 1)), feb = Value.int(F.day(2020, 2, 1))
        let expected: [[Value]] = [
            // lessons 1, 2, 2 → avg 1.666… → 1.67; minutes 0.01, 0.02, -0.10 → -0.07 / 3 = -0.0233… → -0.02
            // levels: 1/4 medium, 2/4 high, 2/0 none
            [.int(501), .int(10), jan, .text("month1"), .int(3), .int(3), .int(167), .int(-2), .int(1), .int(1), .int(0), .int(0)],
            [.int(0), .int(10), feb, .text("month1"), .int(1), .int(1), .int(0), .int(0), .int(0), .int(0), .int(0), .int(1)],
            // one closed user: 2 lessons, 1.50 minutes, 2/10 → low
            [.int(501), .int(10), jan, .text("month3"), .int(3), .int(1), .int(200), .int(150), .int(0), .int(0), .int(1), .int(0)],
            [.int(0), .int(10), feb, .text("month3"), .int(1), .int(1), .int(0), .int(0), .int(0), .int(0), .int(0), .int(1)],
            // nobody closed: averages NULL, no levels
            [.int(501), .int(10), jan, .text("eop"), .int(3), .int(0), .null, .null, .int(0), .int(0), .int(0), .int(0)],
            // 1/20 → low
            [.int(0), .int(10), feb, .text("eop"), .int(1), .int(1), .int(100), .int(5), .int(0), .int(0), .int(1), .int(0)],
        ]
        XCTAssertEqual((0..<output.count).map(output.row), expected)
    }

    func testEachRowIsWrittenWithTheExactTotalsItWasWorkedOutFrom() throws {
        let stage = try make("""
            from: userprogram
            dimensions: {program_id: program_id}
            metrics:
              avg_minutes: {avg: minutes, scale: 1}
            write: {connection: warehouse, table: dw.avg, key: [program_id]}
            """)
        let fields = [Field("program_id", .int), Field("minutes", .numeric(precision: 12, scale: 2))]
        let output = try stage.rollupWithTotals(F.batch(fields, [[.int(1), .int(1)], [.int(1), .int(2)], [.int(1), .null]]))
        XCTAssertEqual(output.schema, [Field("program_id", .int), Field("avg_minutes", .numeric(precision: 12, scale: 1)),
                                       Field("_acc_rows", .bigint), Field("_acc_avg_minutes_n", .bigint),
                                       Field("_acc_avg_minutes_sum", .numeric(precision: 18, scale: 2))])
        // 0.01 + 0.02 over 2 values, of 3 rows: the rounded average 0.0 alone could not be adjusted
        XCTAssertEqual(output.row(0), [.int(1), .int(0), .int(3), .int(2), .int(3)])
    }

    func testTakingRowsAwayFromTheirTotalsGivesTheRollupOfTheRowsLeft() throws {
        let stage = try make(Self.dostYAML)
        let jan31 = Value.int(F.day(2020, 1, 31)), jan2 = Value.int(F.day(2020, 1, 2))
        let kept: [[Value]] = [
            [.int(501), .int(10), jan31, .int(1), .int(1), .int(4), .int(2), .int(150), .int(10), .null, .null, .null],
        ]
        let replaced: [[Value]] = [
            [.int(501), .int(10), jan2, .int(2), .int(-10), .int(0), .null, .null, .null, .null, .null, .null],
            [.int(501), .int(10), jan2, .int(3), .int(7), .int(9), .int(4), .int(99), .int(12), .int(5), .int(5), .int(20)],
        ]
        let all = F.batch(Self.userprogramFields, kept + replaced)
        let shape = try stage.shape(of: all.schema)
        var totals = MetricRollup.Accumulators(metricCount: 4, levelCount: 4)
        try stage.accumulate(all, shape: shape, into: &totals, sign: 1)
        try stage.accumulate(F.batch(Self.userprogramFields, replaced), shape: shape, into: &totals, sign: -1)
        XCTAssertTrue(totals.addsUp)
        let adjusted = try stage.output(totals, shape: shape)
        let direct = try stage.rollupWithTotals(F.batch(Self.userprogramFields, kept))
        XCTAssertEqual((0..<adjusted.count).map(adjusted.row), (0..<direct.count).map(direct.row))

        try stage.accumulate(F.batch(Self.userprogramFields, replaced + replaced), shape: shape, into: &totals, sign: -1)
        XCTAssertFalse(totals.addsUp, "rows taken away that were never counted")
    }

    func testAveragesRoundHalfAwayFromZero() throws {
        let yaml = """
            from: userprogram
            dimensions: {program_id: program_id}
            metrics:
              avg_minutes: {avg: minutes, scale: 2}
              avg_minutes_1: {avg: minutes, scale: 1}
              avg_lessons: {avg: lessons}
            write: {connection: warehouse, table: dw.avg, key: [program_id]}
            """
        let stage = try make(yaml)
        let fields = [Field("program_id", .int), Field("minutes", .numeric(precision: 12, scale: 2)), Field("lessons", .int)]
        let rows: [[Value]] = [
            [.int(1), .int(1), .int(1)], [.int(1), .int(2), .int(2)],         // 0.015 → 0.02 / 0.0; 1.5 → 1.50
            [.int(2), .int(-1), .int(-1)], [.int(2), .int(-2), .int(-2)],     // -0.015 → -0.02 / -0.0; -1.5 → -1.50
            [.int(3), .int(15), .int(1)], [.int(3), .int(20), .null],         // 0.175 → 0.18 / 0.2; 1 → 1.00
            [.int(4), .null, .null],                                            // nothing to average → NULL
        ]
        let output = try stage.rollup(F.batch(fields, rows))
        XCTAssertEqual(output.schema.map(\.type), [.int, .numeric(precision: 12, scale: 2), .numeric(precision: 12, scale: 1),
                                                    .numeric(precision: 12, scale: 2)])
        XCTAssertEqual((0..<output.count).map(output.row), [
            [.int(1), .int(2), .int(0), .int(150)],
            [.int(2), .int(-2), .int(0), .int(-150)],
            [.int(3), .int(18), .int(2), .int(100)],
            [.int(4), .null, .null, .null],
        ])
    }

    func testTruncateNeedsADateColumn() throws {
        let yaml = Self.countYAML(dimensions: "cohort: {column: program_id, truncate: year}", key: "cohort")
        let stage = try make(yaml)
        XCTAssertThrowsError(try stage.rollup(F.batch([Field("program_id", .int)], [[.int(1)]]))) { error in
            guard case StageFailure.config(let message) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(message.contains("truncate needs a date column"), message)
        }
    }

    func testTruncateToYear() throws {
        let yaml = Self.countYAML(dimensions: "cohort_year: {column: start_date, truncate: year}", key: "cohort_year")
        let stage = try make(yaml)
        let output = try stage.rollup(F.batch([Field("start_date", .date)],
                                              [[.int(F.day(2020, 12, 31))], [.int(F.day(2020, 1, 1))], [.int(F.day(1999, 6, 15))], [.null]]))
        XCTAssertEqual((0..<output.count).map(output.row), [
            [.int(F.day(2020, 1, 1)), .int(2)], [.int(F.day(1999, 1, 1)), .int(1)], [.null, .int(1)],
        ])
    }

    func testTwoDimensionsTruncatingOneDateDifferentlyEachKeepTheirOwn() throws {
        let yaml = Self.countYAML(dimensions: "cohort_month: {column: start_date, truncate: month}, cohort_year: {column: start_date, truncate: year}", key: "cohort_month, cohort_year")
        let output = try make(yaml).rollup(F.batch([Field("start_date", .date)], [[.int(F.day(2020, 6, 15))], [.int(F.day(2020, 6, 15))]]))
        XCTAssertEqual((0..<output.count).map(output.row), [[.int(F.day(2020, 6, 1)), .int(F.day(2020, 1, 1)), .int(2)]])
    }

    // MARK: types, overflow and odd values

    /// Two unpivot groups, `g1` reading `a` and `g2` reading `b` as `v`.
    static func unpivotYAML(metric: String, levels: String = "") -> String {
        """
        from: userprogram
        dimensions: {k: k}
        unpivot:
          name_column: w
          groups:
            g1: {v: a, d: c}
            g2: {v: b, d: c}
        metrics:
          \(metric)
        \(levels)
        write: {connection: warehouse, table: dw.t, key: [k, w]}
        """
    }

    func testUnpivotGroupsWhoseColumnsDifferInTypeAreAConfigurationError() throws {
        let stage = try make(Self.unpivotYAML(metric: "avg_v: {avg: v, scale: 2}"))
        for other in [DataType.int, .double] {
            let input = F.batch([Field("k", .int), Field("a", .numeric(precision: 10, scale: 2)), Field("b", other), Field("c", .int)],
                                [[.int(1), .int(150), other == .double ? .double(3) : .int(3), .int(1)]])
            XCTAssertThrowsError(try stage.rollup(input), "\(other)") { error in
                guard case StageFailure.config(let message) = error else { return XCTFail("\(error)") }
                XCTAssertTrue(message.hasPrefix("metric 'avg_v': avg"), message)
            }
        }
    }

    func testLevelsNeedExactNumbersOfOneScale() throws {
        let stage = try make(Self.unpivotYAML(metric: "n: {count: true}",
                                              levels: "levels: {numerator: v, denominator: d, thresholds: {high: 1/2, low: \"0\"}}"))
        for (type, value, expected) in [(DataType.double, Value.double(1.5), "levels: numerator needs an integer or numeric column, 'a' is double precision"),
                                        (.numeric(precision: 10, scale: 2), .int(150), "levels: numerator 'v' is numeric(10,2) but denominator 'd' is int; give them the same scale")] {
            let input = F.batch([Field("k", .int), Field("a", type), Field("b", type), Field("c", .int)], [[.int(1), value, value, .int(3)]])
            XCTAssertThrowsError(try stage.rollup(input)) { error in
                guard case StageFailure.config(let message) = error else { return XCTFail("\(error)") }
                XCTAssertEqual(message, expected)
            }
        }
    }

    func testLevelsOfHugeValuesCompareExactlyInsteadOfOverflowing() throws {
        let stage = try make(Self.levelsYAML)
        let input = F.batch([Field("program_id", .int), Field("lessons", .bigint), Field("scheduled", .bigint)],
                            [[.int(1), .int(1_000_000_000_000_000_000), .int(3_000_000_000_000_000_000)],
                             [.int(2), .int(Int64.max / 2), .int(Int64.max)]])
        let output = try stage.rollup(input)
        // 1/3 is "medium" (≥ 1/4); (max/2)/max is just under 1/2, so "medium" too.
        XCTAssertEqual((0..<output.count).map(output.row), [
            [.int(1), .int(1), .int(0), .int(1), .int(0), .int(0)],
            [.int(2), .int(1), .int(0), .int(1), .int(0), .int(0)],
        ])
    }

    func testASumOrAverageBeyond64BitsIsADataErrorNotACrash() throws {
        let overflowingSum = F.batch([Field("k", .int), Field("a", .bigint), Field("b", .bigint), Field("c", .int)],
                                     [[.int(1), .int(Int64.max), .int(0), .int(1)], [.int(1), .int(1), .int(0), .int(1)]])
        let overflowingScale = F.batch([Field("k", .int), Field("a", .bigint), Field("b", .bigint), Field("c", .int)],
                                       [[.int(1), .int(Int64.max / 10), .int(0), .int(1)]])
        for (metric, input) in [("avg_v: {avg: v}", overflowingSum), ("avg_v: {avg: v, scale: 12}", overflowingScale)] {
            XCTAssertThrowsError(try make(Self.unpivotYAML(metric: metric)).rollup(input), metric) { error in
                guard case StageFailure.data(let message) = error else { return XCTFail("\(error)") }
                XCTAssertTrue(message.hasPrefix("metric 'avg_v'"), message)
            }
        }
    }

    func testCountNotNullCountsNonNullValuesOfAnyTypeWithoutAddingThemUp() throws {
        let yaml = """
            from: userprogram
            dimensions: {k: k}
            metrics: {big: {count_not_null: big}, note: {count_not_null: note}, share: {count_not_null: share}}
            write: {connection: warehouse, table: dw.t, key: [k]}
            """
        // Adding up two maximal bigints overflowed; reading a text or double column as integers crashed.
        let input = F.batch([Field("k", .int), Field("big", .bigint), Field("note", .text), Field("share", .double)], [
            [.int(1), .int(.max), .text("a"), .double(0.5)],
            [.int(1), .int(.max), .null, .null],
            [.int(1), .null, .text("b"), .double(1.5)],
        ])
        let output = try make(yaml).rollup(input)
        XCTAssertEqual([output.cell(0, "big"), output.cell(0, "note"), output.cell(0, "share")], [.int(2), .int(2), .int(2)])
    }

    func testAScaleAbove12IsRejectedWhenBuilt() throws {
        let (build, sink) = F.build("engagement_metric", inputs: ["userprogram": .relation], connections: ["warehouse": false])
        XCTAssertThrowsError(try MetricRollup(config: try F.config(Self.unpivotYAML(metric: "avg_v: {avg: v, scale: 13}")), build: build))
        XCTAssertEqual(sink.diagnostics.map(\.message), ["stage 'engagement_metric': metric 'avg_v': scale 13 is above 12, the most an average keeps"])
    }

    func testADayBeyondPostgresDatesIsADataErrorWhenTruncatedNotACrash() throws {
        let input = F.batch([Field("d", .date)], [[.int(9_223_372_036_854_700_000)]])
        XCTAssertThrowsError(try make(Self.countYAML(dimensions: "month: {column: d, truncate: month}", key: "month")).rollup(input)) { error in
            guard case StageFailure.data(let message) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(message, "dimension 'month': day 9223372036854700000 of 'd' is beyond PostgreSQL's dates")
        }
    }

    func testInfiniteDatesStayInfiniteWhenTruncated() throws {
        let yaml = Self.countYAML(dimensions: "cohort_month: {column: start_date, truncate: month}", key: "cohort_month")
        let output = try make(yaml).rollup(F.batch([Field("start_date", .date)],
                                                   [[.int(PGTime.infiniteDate)], [.int(PGTime.minusInfiniteDate)], [.int(F.day(2020, 6, 15))]]))
        XCTAssertEqual((0..<output.count).map(output.row), [
            [.int(PGTime.infiniteDate), .int(1)], [.int(PGTime.minusInfiniteDate), .int(1)], [.int(F.day(2020, 6, 1)), .int(1)],
        ])
    }

    func testTextThatDiffersOnlyInUnicodeNormalisationStaysInTwoCellsAsInSQL() throws {
        let yaml = Self.countYAML(dimensions: "name: name", key: "name")
        // "café" with a precomposed é, and with an e and a combining accent: equal to Swift's String, not to PostgreSQL.
        let output = try make(yaml).rollup(F.batch([Field("name", .text)], [[.text("caf\u{E9}")], [.text("cafe\u{301}")]]))
        XCTAssertEqual(output.count, 2)
    }
}
