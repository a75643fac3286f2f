import ArgumentParser
import PipelineKit

extension Runner {
    struct Plan: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show the pipeline's DAG: stages, types, edges, connections.")

        enum Format: String, ExpressibleByArgument, CaseIterable { case text, dot, mermaid }

        @OptionGroup var pipeline: PipelineArgument
        @OptionGroup var variables: VariableOptions
        @Option(help: "text, dot (Graphviz) or mermaid.")
        var format: Format = .text

        func run() throws {
            let definition = try loadPipeline(pipeline.path, try variables.loadOptions())
            let plan = try ExecutionPlan(pipeline: definition)
            let stages = plan.order.compactMap { definition.stage($0) }
            switch format {
            case .text:
                print("pipeline \(definition.name) (as_of \(definition.asOf))")
                for (name, connection) in definition.connections.sorted(by: { $0.key < $1.key }) {
                    print("  connection \(name): \(connection.info.redacted)\(connection.readOnly ? " (read-only)" : "")")
                }
                for (index, stage) in stages.enumerated() {
                    let inputs = stage.inputs.isEmpty ? "" : " ← \(stage.inputs.joined(separator: ", "))"
                    print("  \(index + 1). \(stage.id) [\(stage.type)]\(inputs)")
                }
            case .dot, .mermaid:
                let graph = PlanGraph(name: definition.name, stages: stages.map { ($0.id, $0.type, $0.inputs) })
                print(format == .dot ? graph.dot : graph.mermaid)
            }
        }
    }
}
