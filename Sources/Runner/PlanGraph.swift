import PipelineKit

/// A pipeline's stages as a Graphviz or Mermaid graph. Stage ids and the
/// pipeline name are free text, so every one is escaped for the language.
struct PlanGraph {
    let name: String
    let stages: [(id: String, type: String, inputs: [String])]

    var dot: String {
        // In a quoted DOT string only \" is an escape, and \n ends a label line.
        func quoted(_ text: String) -> String {
            "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\""
        }
        var lines = ["digraph \(quoted(name)) {", "  rankdir=LR;"]
        for stage in stages {
            let label = quoted(stage.id + "\n" + stage.type).replacingOccurrences(of: "\n", with: "\\n")
            lines.append("  \(quoted(stage.id)) [label=\(label)];")
        }
        for stage in stages { for input in stage.inputs { lines.append("  \(quoted(input)) -> \(quoted(stage.id));") } }
        return (lines + ["}"]).joined(separator: "\n")
    }

    var mermaid: String {
        // Mermaid node ids must be plain words: stages get s0, s1, ... and their
        // text goes in a quoted label, where entity codes stand for # " < >.
        func label(_ text: String) -> String {
            text.replacingOccurrences(of: "#", with: "#35;").replacingOccurrences(of: "\"", with: "#quot;")
                .replacingOccurrences(of: "<", with: "#lt;").replacingOccurrences(of: ">", with: "#gt;")
        }
        let node = Dictionary(stages.enumerated().map { ($0.element.id, "s\($0.offset)") }, uniquingKeysWith: { first, _ in first })
        var lines = ["flowchart LR"]
        for stage in stages { lines.append("  \(node[stage.id]!)[\"\(label(stage.id))<br/>\(label(stage.type))\"]") }
        for stage in stages {
            for input in stage.inputs { if let from = node[input] { lines.append("  \(from) --> \(node[stage.id]!)") } }
        }
        return lines.joined(separator: "\n")
    }
}
