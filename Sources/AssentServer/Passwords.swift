import AssentStore
import HummingbirdBcrypt

extension PasswordHasher {
    /// bcrypt from hummingbird-auth. Cost 12 (the default) takes a noticeable
    /// fraction of a second per hash on purpose; tests use a low cost.
    public static func bcrypt(cost: UInt8 = 12) -> PasswordHasher {
        PasswordHasher(hash: { Bcrypt.hash($0, cost: cost) }, verify: { Bcrypt.verify($0, hash: $1) })
    }
}
