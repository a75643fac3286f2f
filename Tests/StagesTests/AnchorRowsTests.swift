import XCTest
import PipelineKit
@testable import Stages

/// The choice of each group's anchor row, below the windowAggregate that uses it.
final class AnchorRowsTests: XCTestCase {
    /// Rows of (user, program, created, tie) in input order.
    private func anchors(_ rows: [(Int64?, Int64, Int64?, Value)], tieType: DataType = .bigint) -> Batch {
        var batch = Batch(schema: [Field("user_id", .bigint), Field("program_id", .int),
                                   Field("created_on", .timestamptz), Field("tie", tieType)])
        for (user, program, created, tie) in rows {
            batch.append(row: [user.map(Value.int) ?? .null, .int(program), created.map(Value.int) ?? .null, tie])
        }
        return batch
    }

    private func choose(_ batch: Batch, only: Set<GroupKey>? = nil, inKeyOrder: Bool = true) -> AnchorRows {
        AnchorRows(keyColumns: [batch.columns[0], batch.columns[1]], times: batch.columns[2], tieBreak: batch.columns[3],
                   count: batch.count, only: only, inKeyOrder: inKeyOrder)
    }

    func testTheEarliestRowWinsThenTheLowestTieBreakThenTheRowReadFirst() {
        let batch = anchors([
            (1, 10, 300, .int(1)),
            (1, 10, 100, .int(9)),
            (1, 10, 100, .int(5)),   // same instant, lower tie-break: wins
            (1, 10, 100, .int(5)),   // an exact repeat: the first read stays
            (2, 10, 100, .null),     // a NULL tie-break loses to any value
            (2, 10, 100, .int(7)),
            (3, 10, 100, .null),     // two NULLs: the first read wins
            (3, 10, 100, .null),
        ])
        let chosen = choose(batch)
        XCTAssertEqual(chosen.keys, [GroupKey(a: 1, b: 10), GroupKey(a: 2, b: 10), GroupKey(a: 3, b: 10)])
        XCTAssertEqual(chosen.rows, [2, 5, 6])
    }

    func testATextTieBreakIsComparedByteForByte() {
        // "Z" (0x5A) sorts before "a" (0x61) in bytes, unlike in a case-insensitive order.
        let batch = anchors([(1, 10, 100, .text("a")), (1, 10, 100, .text("Z"))], tieType: .text)
        XCTAssertEqual(choose(batch).rows, [1])
    }

    func testRowsWithoutKeyOrTimeOrWithAnInfiniteTimeAreCountedAndLeftOut() {
        let batch = anchors([
            (nil, 10, 100, .int(1)),
            (1, 10, nil, .int(1)),
            (1, 10, PGTime.infinity, .int(1)),
            (1, 10, PGTime.minusInfinity, .int(1)),
            (1, 10, 200, .int(1)),
        ])
        let chosen = choose(batch)
        XCTAssertEqual(chosen.rows, [4])
        XCTAssertEqual([chosen.nullKeys, chosen.nullTimes, chosen.infiniteTimes], [1, 1, 2])
    }

    func testOnlyTheAskedForGroupsAreChosen() {
        let batch = anchors([(1, 10, 100, .int(1)), (2, 10, 100, .int(1)), (2, 20, 50, .int(1))])
        let chosen = choose(batch, only: [GroupKey(a: 2, b: 20), GroupKey(a: 9, b: 9)])
        XCTAssertEqual(chosen.keys, [GroupKey(a: 2, b: 20)])
        XCTAssertEqual(chosen.rows, [2])
    }

    func testWithoutKeyOrderTheSameRowsAreChosen() {
        var rows: [(Int64?, Int64, Int64?, Value)] = []
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<5_000 {
            rows.append((Int64.random(in: 1...500, using: &generator), Int64.random(in: 1...3, using: &generator),
                         Int64.random(in: 1...20, using: &generator), .int(Int64.random(in: 1...4, using: &generator))))
        }
        let batch = anchors(rows)
        let ordered = choose(batch)
        let unordered = choose(batch, inKeyOrder: false)
        XCTAssertEqual(ordered.keys, ordered.keys.sorted { ($0.a, $0.b) < ($1.a, $1.b) })
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: zip(unordered.keys, unordered.rows)),
                       Dictionary(uniqueKeysWithValues: zip(ordered.keys, ordered.rows)))
        // Every chosen row is the minimum of its group by (time, tie, position).
        for (key, chosenRow) in zip(ordered.keys, ordered.rows) {
            let members = rows.indices.filter { rows[$0].0 == key.a && rows[$0].1 == key.b }
            let best = members.min { x, y in
                let (tx, ty) = (rows[x].2!, rows[y].2!)
                if tx != ty { return tx < ty }
                if case let (.int(u), .int(v)) = (rows[x].3, rows[y].3), u != v { return u < v }
                return x < y
            }
            XCTAssertEqual(chosenRow, best)
        }
    }
}
