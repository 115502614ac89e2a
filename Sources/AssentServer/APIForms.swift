import AssentCore
import AssentStore
import Foundation
import Hummingbird

// MARK: Wire types

/// A form topic: `"events"` or `{"key": "events", "noticeVersion": 2}`.
struct FormTopicBody: Decodable, Sendable {
    var key: String
    var noticeVersion: Int?

    enum CodingKeys: String, CodingKey { case key, noticeVersion }

    init(from decoder: any Decoder) throws {
        if let single = try? decoder.singleValueContainer(), let key = try? single.decode(String.self) {
            self.key = key
            return
        }
        let c = try decoder.container(keyedBy: CodingKeys.self)
        for extra in try decoder.container(keyedBy: AnyKey.self).allKeys where CodingKeys(stringValue: extra.stringValue) == nil {
            throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath + [extra], debugDescription: "is not a known field (known: key, noticeVersion)"))
        }
        key = try c.decode(String.self, forKey: .key)
        noticeVersion = try c.decodeIfPresent(Int.self, forKey: .noticeVersion)
    }

    var topic: FormTopic { FormTopic(key: key, noticeVersion: noticeVersion) }
}

struct CreateFormBody: StrictBody {
    static let allowedKeys: Set<String> = ["id", "title", "introduction", "kind", "topics", "doubleOptIn", "askName", "successUrl", "allowedOrigins", "language"]
    var id: String
    var title: String
    var introduction: String?
    var kind: String?
    var topics: [FormTopicBody]
    var doubleOptIn: Bool?
    var askName: Bool?
    var successUrl: String?
    var allowedOrigins: [String]?
    var language: String?
}

struct PatchFormBody: StrictBody {
    static let allowedKeys: Set<String> = ["title", "introduction", "kind", "topics", "doubleOptIn", "askName", "successUrl", "allowedOrigins", "language"]
    var title: String?
    var introduction: String?
    var kind: String?
    var topics: [FormTopicBody]?
    var doubleOptIn: Bool?
    var askName: Bool?
    var successUrl: Patch<String>
    var allowedOrigins: [String]?
    var language: Patch<String>

    enum CodingKeys: String, CodingKey {
        case title, introduction, kind, topics, doubleOptIn, askName, successUrl, allowedOrigins, language
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        title = try c.decodeIfPresent(String.self, forKey: .title)
        introduction = try c.decodeIfPresent(String.self, forKey: .introduction)
        kind = try c.decodeIfPresent(String.self, forKey: .kind)
        topics = try c.decodeIfPresent([FormTopicBody].self, forKey: .topics)
        doubleOptIn = try c.decodeIfPresent(Bool.self, forKey: .doubleOptIn)
        askName = try c.decodeIfPresent(Bool.self, forKey: .askName)
        successUrl = try c.decodePatch(String.self, forKey: .successUrl)
        allowedOrigins = try c.decodeIfPresent([String].self, forKey: .allowedOrigins)
        language = try c.decodePatch(String.self, forKey: .language)
    }
}

struct FormJSON: Encodable {
    var id: String
    var version: Int
    var status: String
    var kind: String
    var title: String
    var introduction: String
    var topics: [FormTopic]
    var doubleOptIn: Bool
    var askName: Bool
    var successUrl: String?
    var allowedOrigins: [String]
    var language: String?
    /// The hosted page.
    var url: String
    var createdAt: Date
    var updatedAt: Date

    init(_ form: Form, baseURL: String) {
        let d = form.definition
        id = form.id
        version = form.version
        status = form.status.rawValue
        kind = d.kind.rawValue
        title = d.title
        introduction = d.introduction
        topics = d.topics
        doubleOptIn = d.doubleOptIn
        askName = d.askName
        successUrl = d.successURL
        allowedOrigins = d.allowedOrigins
        language = d.language
        url = "\(baseURL)/f/\(form.id)"
        createdAt = form.createdAt
        updatedAt = form.versionCreatedAt
    }
}

struct ContactLinksJSON: Encodable {
    struct Headers: Encodable {
        var listUnsubscribe: String
        var listUnsubscribePost: String

        enum CodingKeys: String, CodingKey {
            case listUnsubscribe = "List-Unsubscribe"
            case listUnsubscribePost = "List-Unsubscribe-Post"
        }
    }

    var contactId: String
    var preferenceCentreUrl: String
    /// The topic the unsubscribe link withdraws; absent = every topic.
    var topic: String?
    var unsubscribeUrl: String
    /// RFC 8058 header values to put on a marketing email.
    var headers: Headers
}

struct SubjectRequestJSON: Encodable {
    var id: String
    var contactId: String
    var kind: String
    var status: String
    var channel: String
    var note: String?
    var createdAt: Date
    var dueAt: Date
    var closedAt: Date?

    init(_ r: SubjectRequest) {
        id = r.id.uuidString.lowercased()
        contactId = r.contactID.uuidString.lowercased()
        kind = r.kind.rawValue
        status = r.status.rawValue
        channel = r.channel
        note = r.note
        createdAt = r.createdAt
        dueAt = r.dueAt
        closedAt = r.closedAt
    }
}

// MARK: Handlers

extension API {
    var formRoutes: [APIRoute] {
        [
            APIRoute(method: .get, path: "/api/v1/forms", scope: .read) { r, _ in try await listForms(r) },
            APIRoute(method: .post, path: "/api/v1/forms", scope: .admin) { r, c in try await createForm(r, c) },
            APIRoute(method: .get, path: "/api/v1/forms/{id}", scope: .read) { _, c in try await getForm(c) },
            APIRoute(method: .patch, path: "/api/v1/forms/{id}", scope: .admin) { r, c in try await patchForm(r, c) },
            APIRoute(method: .delete, path: "/api/v1/forms/{id}", scope: .admin) { _, c in try await retireForm(c) },
            APIRoute(method: .get, path: "/api/v1/forms/{id}/versions/{version}", scope: .read) { _, c in try await getFormVersion(c) },
            APIRoute(method: .get, path: "/api/v1/forms/{id}/embed", scope: .read) { _, c in try await embedForm(c) },
            // Links act as the person: whoever holds one can change their
            // preferences, so handing them out needs the write scope.
            APIRoute(method: .get, path: "/api/v1/contacts/{id}/links", scope: .write) { r, c in try await contactLinks(r, c) },
            APIRoute(method: .post, path: "/api/v1/contacts/{id}/links/rotate", scope: .write) { r, c in try await rotateLinks(r, c) },
            APIRoute(method: .get, path: "/api/v1/requests", scope: .read) { r, _ in try await listRequests(r) },
        ]
    }

    /// Data-subject requests people made (the portal's erasure button), for staff to handle.
    func listRequests(_ request: Request) async throws -> APIResponse {
        let query = try Query(request)
        let status = try query.string("status").map { text in
            guard let status = SubjectRequest.Status(rawValue: text) else { throw APIError.badRequest(field: "status", "must be open or closed") }
            return status
        }
        let contact = try query.string("contactId").map { text in
            guard let id = UUID(uuidString: text) else { throw APIError.badRequest(field: "contactId", "'\(text.prefix(64))' is not a UUID") }
            return id
        }
        let limit = try query.limit(default: 100, max: 1_000)
        return try APIResponse(json: ListJSON(items: try await ledger.store.subjectRequests(contactID: contact, status: status, limit: limit).map(SubjectRequestJSON.init)))
    }

    func formID(_ context: AssentRequestContext) throws -> String {
        let id = try context.parameters.require("id")
        try Topic.validateKey(id, field: "id")
        return id
    }

    static func formKind(_ text: String?) throws -> FormDefinition.Kind? {
        guard let text else { return nil }
        guard let kind = FormDefinition.Kind(rawValue: text) else {
            throw APIError.invalid(field: "kind", "'\(text.prefix(32))' must be signup or preferences")
        }
        return kind
    }

    func listForms(_ request: Request) async throws -> APIResponse {
        let includeRetired = try Query(request).bool("includeRetired") ?? false
        return try APIResponse(json: ListJSON(items: try await ledger.store.forms(includeRetired: includeRetired).map { FormJSON($0, baseURL: site.baseURL) }))
    }

    func createForm(_ request: Request, _ context: AssentRequestContext) async throws -> APIResponse {
        var request = request
        let body = try await request.decodeJSON(CreateFormBody.self, context: context)
        let definition = FormDefinition(
            title: body.title, introduction: body.introduction ?? "", kind: try Self.formKind(body.kind) ?? .signup, topics: body.topics.map(\.topic),
            doubleOptIn: body.doubleOptIn ?? true, askName: body.askName ?? false, successURL: body.successUrl,
            allowedOrigins: body.allowedOrigins ?? [], language: body.language)
        let form = try await ledger.createForm(id: body.id, definition: definition)
        var response = try APIResponse(status: .created, json: FormJSON(form, baseURL: site.baseURL))
        response.headers[.location] = "/api/v1/forms/\(form.id)"
        return response
    }

    func getForm(_ context: AssentRequestContext) async throws -> APIResponse {
        try APIResponse(json: FormJSON(try await ledger.existingForm(formID(context)), baseURL: site.baseURL))
    }

    func patchForm(_ request: Request, _ context: AssentRequestContext) async throws -> APIResponse {
        var request = request
        let id = try formID(context)
        let body = try await request.decodeJSON(PatchFormBody.self, context: context)
        let kind = try Self.formKind(body.kind)
        let form = try await ledger.updateForm(id: id) { d in
            if let title = body.title { d.title = title }
            if let introduction = body.introduction { d.introduction = introduction }
            if let kind { d.kind = kind }
            if let topics = body.topics { d.topics = topics.map(\.topic) }
            if let flag = body.doubleOptIn { d.doubleOptIn = flag }
            if let flag = body.askName { d.askName = flag }
            body.successUrl.apply(to: &d.successURL)
            if let origins = body.allowedOrigins { d.allowedOrigins = origins }
            body.language.apply(to: &d.language)
        }
        return try APIResponse(json: FormJSON(form, baseURL: site.baseURL))
    }

    func retireForm(_ context: AssentRequestContext) async throws -> APIResponse {
        try APIResponse(json: FormJSON(try await ledger.retireForm(id: formID(context)), baseURL: site.baseURL))
    }

    func getFormVersion(_ context: AssentRequestContext) async throws -> APIResponse {
        let id = try formID(context)
        guard let version = Int(try context.parameters.require("version")), version >= 1 else {
            throw APIError.badRequest(field: "version", "must be a positive integer")
        }
        guard let form = try await ledger.store.form(id: id, version: version) else {
            _ = try await ledger.existingForm(id)
            throw APIError(.notFound, detail: "form '\(id)' has no version \(version)")
        }
        return try APIResponse(json: FormJSON(form, baseURL: site.baseURL))
    }

    func embedForm(_ context: AssentRequestContext) async throws -> APIResponse {
        let form = try await ledger.existingForm(formID(context))
        guard form.isActive else { throw DomainError.gone(what: "form", id: form.id) }
        return APIResponse(status: .ok, body: Data(try await embed(form).utf8), contentType: "text/html; charset=utf-8")
    }

    func contactLinks(_ request: Request, _ context: AssentRequestContext) async throws -> APIResponse {
        let id = try contactID(context)
        let topic = try Query(request).string("topic")
        return try APIResponse(json: try await links(contactID: id, topic: topic))
    }

    func rotateLinks(_ request: Request, _ context: AssentRequestContext) async throws -> APIResponse {
        let id = try contactID(context)
        try await ledger.rotateLinks(contactID: id)
        return try APIResponse(json: try await links(contactID: id, topic: nil))
    }

    func links(contactID id: UUID, topic: String?) async throws -> ContactLinksJSON {
        // An erased contact has no address to send a link to, and gets none.
        if try await ledger.existingContact(id).isErased { throw DomainError.gone(what: "contact", id: id.uuidString.lowercased()) }
        if let topic {
            try Topic.validateKey(topic, field: "topic")
            guard try await ledger.store.topic(key: topic) != nil else { throw APIError.invalid(field: "topic", "unknown topic '\(topic)'") }
        }
        let base = site.baseURL
        let centre = try await ledger.linkToken(ContactLink(purpose: .preferenceCentre, contactID: id))
        let unsubscribe = "\(base)/u/" + (try await ledger.linkToken(ContactLink(purpose: .unsubscribe, contactID: id, topicKey: topic)))
        return ContactLinksJSON(contactId: id.uuidString.lowercased(), preferenceCentreUrl: "\(base)/p/\(centre)", topic: topic,
                                unsubscribeUrl: unsubscribe,
                                headers: .init(listUnsubscribe: "<\(unsubscribe)>", listUnsubscribePost: "List-Unsubscribe=One-Click"))
    }
}
