import Foundation

/// Builds OpenLineage RunEvents (https://openlineage.io/spec/2-0-2/OpenLineage.json).
public enum OpenLineage {
    public static let producer = "https://github.com/pipelinekit/pipelinekit/tree/\(PipelineKitInfo.version)"
    public static let schemaURL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
    public static let namespace = "pipelinekit"

    static func facetSchema(_ name: String) -> String {
        "https://github.com/pipelinekit/pipelinekit/blob/main/docs/facets.json#/$defs/\(name)"
    }

    static func facet(_ name: String, _ fields: [String: JSON]) -> JSON {
        var object = fields
        object["_producer"] = .string(producer)
        object["_schemaURL"] = .string(facetSchema(name))
        return .object(object)
    }

    static func standardFacet(_ schema: String, _ fields: [String: JSON]) -> JSON {
        var object = fields
        object["_producer"] = .string(producer)
        object["_schemaURL"] = .string("https://openlineage.io/spec/facets/\(schema)")
        return .object(object)
    }

    /// A format style, unlike an ISO8601DateFormatter, costs nothing to make.
    static func timestamp(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }

    public static func event(type: String, time: Date = Date(), runID: UUID, job: String,
                             runFacets: [String: JSON] = [:], inputs: [JSON] = [], outputs: [JSON] = []) -> JSON {
        .object([
            "eventType": .string(type),
            "eventTime": .string(timestamp(time)),
            "producer": .string(producer),
            "schemaURL": .string(schemaURL),
            "run": .object(["runId": .string(runID.uuidString.lowercased()), "facets": .object(runFacets)]),
            "job": .object(["namespace": .string(namespace), "name": .string(job)]),
            "inputs": .array(inputs),
            "outputs": .array(outputs),
        ])
    }

    /// A dataset with its schema, row counts and data-quality facets.
    static func dataset(_ use: DatasetUse, report: StageReport) -> JSON {
        var facets: [String: JSON] = [
            "schema": standardFacet("SchemaDatasetFacet.json", [
                "fields": .array(use.columns.sorted { $0.key < $1.key }.map { .object(["name": .string($0.key), "type": .string($0.value)]) }),
            ]),
        ]
        var datasetFacets: [String: JSON] = [:]
        switch use.direction {
        case .input:
            break
        case .output:
            if let written = report.written {
                datasetFacets["outputStatistics"] = standardFacet("OutputStatisticsOutputDatasetFacet.json", [
                    "rowCount": .int(written.inserted + written.updated + written.unchanged),
                ])
                facets["pipelinekit_rows"] = facet("RowCountsDatasetFacet", [
                    "inserted": .int(written.inserted), "updated": .int(written.updated),
                    "deleted": .int(written.deleted), "unchanged": .int(written.unchanged),
                ])
            }
        }
        var object: [String: JSON] = [
            "namespace": .string(use.namespace), "name": .string(use.name), "facets": .object(facets),
        ]
        if use.direction == .input {
            object["inputFacets"] = .object(datasetFacets)
        } else {
            object["outputFacets"] = .object(datasetFacets)
        }
        return .object(object)
    }
}

public enum PipelineKitInfo {
    public static let version = "0.2.0"
}
