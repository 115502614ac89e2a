import Foundation

/// One topic a form offers, with the notice version the form shows for it.
public struct FormTopic: Codable, Equatable, Sendable {
    public var key: String
    /// The notice version printed on the form. Pinned to the topic's current
    /// version when the form version is saved (nil asks for that), so the
    /// evidence names exactly the text people saw.
    public var noticeVersion: Int?

    public init(key: String, noticeVersion: Int? = nil) {
        self.key = key
        self.noticeVersion = noticeVersion
    }
}

/// What an admin designs: everything a form shows and how it behaves. Saved
/// as immutable versions; an event records the form id and version it came from.
public struct FormDefinition: Codable, Equatable, Sendable {
    public enum Kind: String, Codable, Sendable, CaseIterable {
        /// A ticked box opts in; an unticked one changes nothing.
        case signup
        /// Shows the person's current state (opened from their own link);
        /// unticking a box withdraws.
        case preferences
    }

    public var title: String
    public var introduction: String
    public var kind: Kind
    public var topics: [FormTopic]
    /// Ask every opt-in to be confirmed by email, even for topics that do not
    /// require it. Off: each topic's own rule applies.
    public var doubleOptIn: Bool
    /// Show an optional name field.
    public var askName: Bool
    /// Where the browser goes after a successful post; nil = a hosted thank-you page.
    public var successURL: String?
    /// Web origins (`https://www.example.org`) allowed to embed the form and
    /// post to it from their pages, including JSON posts from scripts (CORS).
    public var allowedOrigins: [String]
    /// The page language; nil = the visitor's browser language.
    public var language: String?

    public init(title: String, introduction: String = "", kind: Kind = .signup, topics: [FormTopic], doubleOptIn: Bool = true,
                askName: Bool = false, successURL: String? = nil, allowedOrigins: [String] = [], language: String? = nil) {
        self.title = title
        self.introduction = introduction
        self.kind = kind
        self.topics = topics
        self.doubleOptIn = doubleOptIn
        self.askName = askName
        self.successURL = successURL
        self.allowedOrigins = allowedOrigins
        self.language = language
    }

    enum CodingKeys: String, CodingKey {
        case title, introduction, kind, topics, doubleOptIn, askName, successURL = "successUrl", allowedOrigins, language
    }

    /// Checks the shape of every field (topics are checked against the store by the ledger).
    public func validate() throws {
        var problems: [ValidationError] = []
        func collect(_ body: () throws -> Void) {
            do { try body() } catch let DomainError.invalid(errors) { problems += errors } catch {}
        }
        collect {
            if title.trimmingCharacters(in: .whitespaces).isEmpty { throw DomainError.invalid(field: "title", "is required") }
            try TextCheck.check(title, field: "title", max: Limits.titleLength)
        }
        collect { try TextCheck.check(introduction, field: "introduction", max: Limits.descriptionLength, allowNewlines: true) }
        if topics.isEmpty { problems.append(.init(field: "topics", "must name at least one topic")) }
        if topics.count > Limits.topicsPerForm { problems.append(.init(field: "topics", "must name at most \(Limits.topicsPerForm) topics")) }
        var seen: Set<String> = []
        for (i, topic) in topics.enumerated() {
            collect { try Topic.validateKey(topic.key, field: "topics[\(i)].key") }
            if !seen.insert(topic.key).inserted { problems.append(.init(field: "topics[\(i)].key", "topic '\(topic.key)' appears more than once")) }
        }
        if let successURL {
            collect { try WebAddress.checkURL(successURL, field: "successUrl") }
        }
        if allowedOrigins.count > Limits.originsPerForm {
            problems.append(.init(field: "allowedOrigins", "must name at most \(Limits.originsPerForm) origins"))
        }
        for (i, origin) in allowedOrigins.enumerated() {
            collect { try WebAddress.checkOrigin(origin, field: "allowedOrigins[\(i)]") }
        }
        if let language {
            let ok = (2...8).contains(language.count) && language.allSatisfy { $0.isASCII && ($0.isLetter || $0 == "-") }
            if !ok { problems.append(.init(field: "language", "'\(language.prefix(40))' is not a language code such as en or de")) }
        }
        if !problems.isEmpty { throw DomainError.invalid(problems) }
    }
}

/// A saved form version with its identity and status.
public struct Form: Equatable, Sendable {
    public enum Status: String, Codable, Sendable {
        case active
        case retired
    }

    /// A slug, as topics have (`newsletter-signup`); it appears in `/f/{id}`.
    public var id: String
    public var version: Int
    public var status: Status
    public var definition: FormDefinition
    public var createdAt: Date
    /// When this version was saved.
    public var versionCreatedAt: Date

    public init(id: String, version: Int, status: Status = .active, definition: FormDefinition, createdAt: Date, versionCreatedAt: Date? = nil) {
        self.id = id
        self.version = version
        self.status = status
        self.definition = definition
        self.createdAt = createdAt
        self.versionCreatedAt = versionCreatedAt ?? createdAt
    }

    public var isActive: Bool { status == .active }
}

/// Checks for the web addresses admins type into form settings.
public enum WebAddress {
    /// An absolute http(s) URL with a host.
    public static func checkURL(_ text: String, field: String) throws {
        try TextCheck.check(text, field: field, max: Limits.urlLength)
        guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), ["http", "https"].contains(scheme),
              let host = url.host, !host.isEmpty else {
            throw DomainError.invalid(field: field, "'\(text.prefix(100))' must be an absolute http:// or https:// URL")
        }
    }

    /// A web origin: scheme, host and optional port, nothing else (`https://www.example.org`).
    public static func checkOrigin(_ text: String, field: String) throws {
        try TextCheck.check(text, field: field, max: 300)
        guard let url = URLComponents(string: text), let scheme = url.scheme?.lowercased(), ["http", "https"].contains(scheme),
              let host = url.host, !host.isEmpty, url.path.isEmpty, url.query == nil, url.fragment == nil, url.user == nil,
              text == text.lowercased() else {
            throw DomainError.invalid(field: field, "'\(text.prefix(100))' must be an origin such as https://www.example.org (lower case, no path or trailing slash)")
        }
    }
}
