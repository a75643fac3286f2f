import ArgumentParser
import PipelineKit
import Stages

extension Runner {
    struct Stages: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "stages",
            abstract: "List every stage type with its documented configuration keys.")

        @Flag(help: "Print Markdown tables (as in the README).")
        var markdown = false

        func run() {
            for type in StageRegistry.standard.all {
                print(markdown ? "### `\(type.type)`\n\n\(type.summary)\n\n| key | type | required | meaning |\n|---|---|---|---|"
                               : "\(type.type) (produces a \(type.produces.rawValue))\n  \(type.summary)")
                for line in StageDocs.lines(type.configKeys, markdown: markdown) { print(line) }
                print("")
            }
        }
    }
}

/// Renders config keys, nested ones indented, from the same declarations the validator uses.
enum StageDocs {
    static func lines(_ keys: [ConfigKey], markdown: Bool, prefix: String = "") -> [String] {
        keys.flatMap { key -> [String] in
            let name = prefix + key.name
            let line = markdown
                ? "| `\(name)` | \(key.shape.summary.replacingOccurrences(of: "|", with: "\\|")) | \(key.required ? "yes" : "") | \(key.doc.replacingOccurrences(of: "|", with: "\\|")) |"
                : "  \(name)\(key.required ? " (required)" : ""): \(key.shape.summary) — \(key.doc)"
            return [line] + lines(nested(key.shape), markdown: markdown, prefix: name + ".")
        }
    }

    static func nested(_ shape: ConfigShape) -> [ConfigKey] {
        switch shape {
        case .object(let keys): keys
        case .dictionary(let value): nested(value).map { ConfigKey("<name>." + $0.name, $0.shape, required: $0.required, $0.doc) }
        case .list(let item): nested(item)
        case .either(let shapes): shapes.flatMap(nested)
        default: []
        }
    }
}
