import Foundation

/// Per contact and topic, the projected state. A missing row is `none`.
/// Only `granted` (and not past its expiry) means "may send".
public enum PreferenceState: String, Sendable, Codable, CaseIterable {
    case none
    case pending
    case granted
    case withdrawn
    case expired
}

/// What an event did.
public enum ConsentAction: String, Sendable, Codable, CaseIterable {
    case requested
    case granted
    case confirmed
    case withdrawn
    case expired
}

/// How the change reached us.
public enum ConsentSource: String, Sendable, Codable, CaseIterable {
    case form
    case preferenceCentre = "preference_centre"
    case portal
    case staff
    case api
    case `import`
    case emailLink = "email_link"
    case oneClickUnsubscribe = "one_click_unsubscribe"
    case system
}

/// For staff entries: how the person told us.
public enum StaffChannel: String, Sendable, Codable, CaseIterable {
    case phone
    case inPerson = "in_person"
    case letter
    case email
}

/// Who recorded the change.
public struct Actor: Equatable, Sendable, Codable {
    public enum Kind: String, Sendable, Codable, CaseIterable {
        case staff
        case apiKey = "api_key"
        case subject
        case system
    }

    public var kind: Kind
    public var id: String?

    public init(kind: Kind, id: String?) {
        self.kind = kind
        self.id = id
    }

    public static let system = Actor(kind: .system, id: nil)
    /// The person themselves (forms, links, the portal).
    public static let subject = Actor(kind: .subject, id: nil)
    public static func apiKey(_ id: String) -> Actor { Actor(kind: .apiKey, id: id) }
    public static func staff(_ id: String) -> Actor { Actor(kind: .staff, id: id) }
}

/// The personal part of an event's evidence. It is sealed (encrypted with the
/// contact's key) before it is stored, so that erasing the key shreds it.
public struct PersonalEvidence: Equatable, Sendable, Codable {
    public var ipAddress: String?
    public var userAgent: String?
    public var note: String?

    public init(ipAddress: String? = nil, userAgent: String? = nil, note: String? = nil) {
        self.ipAddress = ipAddress
        self.userAgent = userAgent
        self.note = note
    }

    public var isEmpty: Bool { ipAddress == nil && userAgent == nil && note == nil }

    /// What a browser or mail client sent, kept as evidence rather than
    /// judged as input: control characters (a tab is legal in a header) are
    /// dropped, an overlong user agent is cut, an address that is not an IP is left out.
    public static func observed(ipAddress: String?, userAgent: String?, note: String? = nil) -> PersonalEvidence {
        let agent = userAgent.map { String(String($0.unicodeScalars.filter { $0.value >= 0x20 && $0.value != 0x7F }).prefix(Limits.userAgentLength)) }
        return PersonalEvidence(ipAddress: ipAddress.flatMap { IPAddressText.isValid($0) ? $0 : nil },
                                userAgent: agent.flatMap { $0.isEmpty ? nil : $0 }, note: note)
    }
}

/// Everything a caller states about how a change was made.
public struct Evidence: Equatable, Sendable {
    public var formID: String?
    public var formVersion: Int?
    public var personal: PersonalEvidence

    public init(formID: String? = nil, formVersion: Int? = nil, personal: PersonalEvidence = .init()) {
        self.formID = formID
        self.formVersion = formVersion
        self.personal = personal
    }

    public func validate(source: ConsentSource, channel: StaffChannel?) throws {
        var problems: [ValidationError] = []
        func collect(_ body: () throws -> Void) {
            do { try body() } catch let DomainError.invalid(e) { problems += e } catch {}
        }
        if source == .staff {
            if channel == nil {
                problems.append(.init(field: "channel", "is required for staff entries: one of \(StaffChannel.allCases.map(\.rawValue).joined(separator: ", "))"))
            }
            if (personal.note ?? "").trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
                problems.append(.init(field: "evidence.note", "is required for staff entries: what the person said and the script used"))
            }
        } else if channel != nil {
            problems.append(.init(field: "channel", "is only used with source staff"))
        }
        if let note = personal.note { collect { try TextCheck.check(note, field: "evidence.note", max: Limits.noteLength, allowNewlines: true) } }
        if let ua = personal.userAgent { collect { try TextCheck.check(ua, field: "evidence.userAgent", max: Limits.userAgentLength) } }
        if let ip = personal.ipAddress, !IPAddressText.isValid(ip) {
            problems.append(.init(field: "evidence.ip", "'\(ip.prefix(64))' is not an IPv4 or IPv6 address"))
        }
        if let formID { collect {
            if formID.isEmpty { throw DomainError.invalid(field: "evidence.formId", "must not be empty when given") }
            try TextCheck.check(formID, field: "evidence.formId", max: Limits.formIDLength)
        } }
        if let formVersion, formVersion < 1 {
            problems.append(.init(field: "evidence.formVersion", "must be 1 or more"))
        }
        if !problems.isEmpty { throw DomainError.invalid(problems) }
    }
}

enum IPAddressText {
    static func isValid(_ text: String) -> Bool {
        guard !text.isEmpty, text.count <= 45 else { return false }
        if text.contains(":") {
            // IPv6: hex groups, at most one "::", optionally ending in dotted IPv4.
            let allowed = Set("0123456789abcdefABCDEF:.")
            guard text.allSatisfy({ allowed.contains($0) }) else { return false }
            let doubleColons = text.components(separatedBy: "::").count - 1
            guard doubleColons <= 1 else { return false }
            let groups = text.split(separator: ":", omittingEmptySubsequences: true)
            guard groups.count <= 8, !groups.isEmpty || doubleColons == 1 else { return false }
            for (i, g) in groups.enumerated() {
                if g.contains(".") {
                    guard i == groups.count - 1, isValidIPv4(String(g)) else { return false }
                } else if g.count > 4 {
                    return false
                }
            }
            return doubleColons == 1 || groups.count == 8 || (groups.last?.contains(".") == true && groups.count == 7)
        }
        return isValidIPv4(text)
    }

    static func isValidIPv4(_ text: String) -> Bool {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { p in
            !p.isEmpty && p.count <= 3 && p.allSatisfy(\.isASCII) && p.allSatisfy(\.isNumber) && (Int(p) ?? 256) <= 255
        }
    }
}
