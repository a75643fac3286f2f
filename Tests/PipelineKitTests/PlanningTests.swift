import Foundation
import XCTest
@testable import PipelineKit

/// Dependency order, `--select`, and cycle detection.
final class PlanningTests: XCTestCase {
    /// Builds a pipeline of no-op stages; `stages` is (id, inputs) in file order.
    private func pipeline(_ stages: [(String, [String])]) throws -> PipelineDefinition {
        var text = "pipeline: plan\nstages:\n"
        for (id, inputs) in stages {
            text += "  - id: \(id)\n    type: noop\n"
            if !inputs.isEmpty { text += "    inputs: [\(inputs.joined(separator: ", "))]\n" }
        }
        return try loadPipeline(text, registry: testRegistry)
    }

    /// extract → clean → {report, load}; audit independent.
    private func warehouse() throws -> PipelineDefinition {
        try pipeline([
            ("report", ["clean"]),
            ("audit", []),
            ("clean", ["extract"]),
            ("extract", []),
            ("load", ["clean"]),
        ])
    }

    func testOrderPutsInputsBeforeTheStagesReadingThem() throws {
        let plan = try ExecutionPlan(pipeline: try pipeline([
            ("report", ["load"]), ("load", ["extract"]), ("extract", []),
        ]))
        XCTAssertEqual(plan.order, ["extract", "load", "report"])
    }

    func testAChainOfThousandsOfStagesIsPlannedInDependencyOrder() throws {
        // Written last to first, so that every step of the order has to look ahead.
        let ids = (0..<3_000).map { "s\($0)" }
        let stages = ids.indices.reversed().map { (ids[$0], $0 == 0 ? [] : [ids[$0 - 1]]) }
        let order = ExecutionPlan.topologicalOrder(ids: stages.map(\.0), inputs: Dictionary(uniqueKeysWithValues: stages))
        XCTAssertEqual(order, ids, "a planner that rescans every stage per step took minutes here")
    }

    func testIndependentStagesKeepFileOrder() throws {
        let plan = try ExecutionPlan(pipeline: try pipeline([
            ("d", ["c"]), ("b", []), ("c", []), ("a", []),
        ]))
        // b, c and a are ready at once and go in file order; d becomes ready after c
        // and comes before a because it is earlier in the file.
        XCTAssertEqual(plan.order, ["b", "c", "d", "a"])

        let independent = try ExecutionPlan(pipeline: try pipeline([("z", []), ("y", []), ("x", [])]))
        XCTAssertEqual(independent.order, ["z", "y", "x"])
    }

    func testOrderOfADiamond() throws {
        let plan = try ExecutionPlan(pipeline: try warehouse())
        XCTAssertEqual(plan.order, ["audit", "extract", "clean", "report", "load"])
        for id in plan.order {
            for input in plan.inputs[id] ?? [] {
                XCTAssertLessThan(plan.order.firstIndex(of: input)!, plan.order.firstIndex(of: id)!, "\(input) before \(id)")
            }
        }
    }

    func testNoSelectorSelectsEveryStage() throws {
        let plan = try ExecutionPlan(pipeline: try warehouse())
        XCTAssertEqual(plan.selected, ["report", "audit", "clean", "extract", "load"])
    }

    func testSelectorWithoutPlusSelectsOnlyThatStage() throws {
        let plan = try ExecutionPlan(pipeline: try warehouse(), selectors: ["clean"])
        XCTAssertEqual(plan.selected, ["clean"])
        XCTAssertEqual(plan.order.count, 5, "the order still covers the whole pipeline")
    }

    func testSelectorWithPlusAddsEverythingDownstream() throws {
        XCTAssertEqual(try ExecutionPlan(pipeline: try warehouse(), selectors: ["clean+"]).selected,
                       ["clean", "report", "load"])
        XCTAssertEqual(try ExecutionPlan(pipeline: try warehouse(), selectors: ["extract+"]).selected,
                       ["extract", "clean", "report", "load"])
        XCTAssertEqual(try ExecutionPlan(pipeline: try warehouse(), selectors: ["report+"]).selected, ["report"])
    }

    func testSeveralSelectorsAreUnited() throws {
        let plan = try ExecutionPlan(pipeline: try warehouse(), selectors: ["audit", "clean+"])
        XCTAssertEqual(plan.selected, ["audit", "clean", "report", "load"])
    }

    func testUnknownSelectorSuggestsAStageName() throws {
        let pipeline = try warehouse()
        XCTAssertThrowsError(try ExecutionPlan(pipeline: pipeline, selectors: ["claen+"])) { error in
            guard case let PlanError.unknownStage(id, suggestion) = error else {
                return XCTFail("expected unknownStage, got \(error)")
            }
            XCTAssertEqual(id, "claen")
            XCTAssertEqual(suggestion, "clean")
            XCTAssertEqual(String(describing: error), "--select claen: no such stage; did you mean 'clean'?")
        }
        XCTAssertThrowsError(try ExecutionPlan(pipeline: pipeline, selectors: ["zzzzzzzz"])) { error in
            XCTAssertEqual(String(describing: error), "--select zzzzzzzz: no such stage")
        }
    }

    func testDependentsAndDownstream() throws {
        let plan = try ExecutionPlan(pipeline: try warehouse())
        XCTAssertEqual(plan.dependents(of: "clean"), ["report", "load"])
        XCTAssertEqual(plan.downstream(of: "extract"), ["clean", "report", "load"])
        XCTAssertEqual(plan.downstream(of: "audit"), [])
    }

    // MARK: cycles

    func testFindCycleReturnsTheStagesOnTheCycleInDataFlowOrder() {
        let cycle = ExecutionPlan.findCycle(ids: ["a", "b", "c", "d"],
                                            inputs: ["a": ["c"], "b": ["a"], "c": ["b"], "d": ["a"]])
        XCTAssertEqual(cycle.map(Set.init), Set(["a", "b", "c"]))
        // Each stage on the cycle feeds the next one.
        if let cycle {
            let inputs = ["a": ["c"], "b": ["a"], "c": ["b"]]
            for (index, id) in cycle.enumerated() {
                let next = cycle[(index + 1) % cycle.count]
                XCTAssertTrue(inputs[next]!.contains(id), "\(id) should feed \(next) in \(cycle)")
            }
        }
    }

    func testFindCycleLeavesOutStagesThatOnlyHangOffTheCycle() {
        let cycle = ExecutionPlan.findCycle(ids: ["start", "x", "y"],
                                            inputs: ["start": [], "x": ["start", "y"], "y": ["x"]])
        XCTAssertEqual(cycle.map(Set.init), Set(["x", "y"]))
    }

    func testFindCycleOnAnAcyclicGraphIsNil() {
        XCTAssertNil(ExecutionPlan.findCycle(ids: ["a", "b", "c"], inputs: ["a": [], "b": ["a"], "c": ["a", "b"]]))
        XCTAssertNil(ExecutionPlan.findCycle(ids: [], inputs: [:]))
    }

    func testFindCycleIgnoresInputsThatAreNotStages() {
        XCTAssertNil(ExecutionPlan.findCycle(ids: ["a"], inputs: ["a": ["ghost"]]))
    }

    func testSelfLoopIsACycleOfOne() {
        XCTAssertEqual(ExecutionPlan.findCycle(ids: ["a"], inputs: ["a": ["a"]]), ["a"])
    }

    func testPlanOfACyclicPipelineThrows() throws {
        // The loader refuses cycles, so make one in an already loaded definition.
        var pipeline = try pipeline([("a", []), ("b", ["a"]), ("c", ["b"])])
        pipeline.stages[0].inputs = ["c"]
        XCTAssertThrowsError(try ExecutionPlan(pipeline: pipeline)) { error in
            guard case PlanError.cycle(let stages) = error else { return XCTFail("expected a cycle, got \(error)") }
            XCTAssertEqual(Set(stages), ["a", "b", "c"])
            let text = String(describing: error)
            XCTAssertTrue(text.hasPrefix("the stages form a cycle: "), text)
            XCTAssertEqual(text.components(separatedBy: " → ").count, 4, "three stages and the first again: \(text)")
        }
    }
}
