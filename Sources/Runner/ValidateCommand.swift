import ArgumentParser
import PipelineKit

extension Runner {
    struct Validate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a pipeline file; exit 0 when valid, 2 with every problem as FILE:LINE:COLUMN.")

        @OptionGroup var pipeline: PipelineArgument
        @OptionGroup var variables: VariableOptions

        func run() throws {
            let definition = try loadPipeline(pipeline.path, try variables.loadOptions())
            print("\(pipeline.path): valid (pipeline '\(definition.name)', \(definition.stages.count) stages)")
        }
    }
}
