import AssentCore
import AssentStore
import Foundation
import Hummingbird

struct EraseBody: StrictBody {
    static let allowedKeys: Set<String> = ["reason"]
    var reason: String
}

struct ObjectBody: StrictBody {
    static let allowedKeys: Set<String> = ["note", "source", "channel"]
    /// What the person said (required for staff entries).
    var note: String?
    var source: String?
    var channel: String?
}

extension API {
    var rightsRoutes: [APIRoute] {
        [
            APIRoute(method: .get, path: "/api/v1/contacts/{id}/export", scope: .read) { r, c in try await exportContact(r, c) },
            APIRoute(method: .post, path: "/api/v1/contacts/{id}/erase", scope: .admin) { r, c in try await eraseContact(r, c) },
            APIRoute(method: .post, path: "/api/v1/contacts/{id}/object", scope: .write) { r, c in try await objectToMarketing(r, c) },
        ]
    }

    /// Everything stored about the person (GDPR Art. 15/20): JSON, or `?format=html` for a printable copy.
    func exportContact(_ request: Request, _ context: AssentRequestContext) async throws -> APIResponse {
        let id = try contactID(context)
        let format = try Query(request).string("format") ?? "json"
        guard ["json", "html"].contains(format) else { throw APIError.badRequest(field: "format", "must be json or html") }
        let export = try await ledger.exportPersonalData(contactID: id, issuer: issuer)
        try await ledger.audit(nil, "export_contact", actorEmail: "API key \(context.apiKey?.id ?? "?")", target: "contact:\(id.uuidString.lowercased())",
                               ipAddress: context.remoteIP)
        if format == "html" {
            return APIResponse(status: .ok, body: Data(try await exportHTML(export).utf8), contentType: "text/html; charset=utf-8")
        }
        return APIResponse(status: .ok, buffer: ByteBuffer(bytes: export.jsonBytes(newline: true)), contentType: "application/json")
    }

    func eraseContact(_ request: Request, _ context: AssentRequestContext) async throws -> APIResponse {
        var request = request
        let id = try contactID(context)
        let body = try await request.decodeJSON(EraseBody.self, context: context)
        let contact = try await ledger.eraseContact(id, reason: body.reason, erasedBy: "API key \(context.apiKey?.id ?? "?")", ipAddress: context.remoteIP)
        return try APIResponse(json: ContactJSON(contact))
    }

    func objectToMarketing(_ request: Request, _ context: AssentRequestContext) async throws -> APIResponse {
        var request = request
        let id = try contactID(context)
        let body = try await request.decodeJSON(ObjectBody.self, context: context)
        let source = try body.source.map { text in
            guard let source = ConsentSource(rawValue: text), ![.system, .emailLink].contains(source) else {
                throw APIError.invalid(field: "source", "'\(text.prefix(64))' is not a source this API records")
            }
            return source
        } ?? .api
        let channel = try body.channel.map { text in
            guard let channel = StaffChannel(rawValue: text) else { throw APIError.invalid(field: "channel", "unknown channel '\(text.prefix(64))'") }
            return channel
        }
        let result = try await ledger.objectToMarketing(id, source: source, channel: channel, actor: .apiKey(context.apiKey?.id ?? "unknown"),
                                                        evidence: Evidence(personal: PersonalEvidence(note: body.note)))
        return try APIResponse(json: ContactJSON(try await ledger.existingContact(id)).with(withdrawn: result.events.map(\.topicKey)))
    }

    /// The export as a printable page (the same facts as the JSON).
    func exportHTML(_ export: PersonalDataExport) async throws -> String {
        try await exportPage(export)
    }
}

extension ContactJSON {
    func with(withdrawn: [String]) -> ObjectionJSON { ObjectionJSON(contact: self, withdrawn: withdrawn) }
}

struct ObjectionJSON: Encodable {
    var contact: ContactJSON
    /// The topics the objection withdrew.
    var withdrawn: [String]
}
