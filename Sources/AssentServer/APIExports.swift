import AssentCore
import AssentStore
import Foundation
import Hummingbird

extension API {
    var exportRoutes: [APIRoute] {
        [APIRoute(method: .get, path: "/api/v1/exports/{kind}", scope: .admin, replayable: false) { r, c in try await export(r, c) }]
    }

    /// Every contact, preference or event, streamed as CSV or NDJSON for a
    /// data warehouse (`assent export` does the same). Everyone's data, so an
    /// admin key, and audited.
    func export(_ request: Request, _ context: AssentRequestContext) async throws -> APIResponse {
        let name = context.parameters.get("kind") ?? ""
        guard let kind = ExportKind(rawValue: name) else {
            throw APIError(.notFound, detail: "export '\(name.prefix(40))' not found: contacts, preferences or events")
        }
        let q = try Query(request)
        let formatName = q.string("format") ?? "csv"
        guard let format = ExportFormat(rawValue: formatName) else { throw APIError.badRequest(field: "format", "must be csv or ndjson") }
        try await ledger.audit(nil, "export_all", actorEmail: "API key \(context.apiKey?.id ?? "?")", target: "export:\(kind.rawValue)",
                               detail: "format \(format.rawValue)", ipAddress: context.remoteIP)
        let ledger = self.ledger
        var response = APIResponse(status: .ok, body: Data(), contentType: format == .csv ? "text/csv; charset=utf-8" : "application/x-ndjson")
        response.headers[.contentDisposition] = "attachment; filename=\"assent-\(kind.rawValue).\(format.rawValue)\""
        response.stream = { writer in
            _ = try await ledger.export(kind, format: format) { text, _ in try await writer.write(ByteBuffer(string: text)) }
        }
        return response
    }
}
