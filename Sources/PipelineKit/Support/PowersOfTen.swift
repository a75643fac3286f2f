extension Int64 {
    /// 10^0 ... 10^18, every power of ten an Int64 holds.
    private static let powersOfTen: [Int64] = (0...18).map { exponent in (0..<exponent).reduce(1) { result, _ in result * 10 } }

    /// 10^`exponent`, for scaled decimals (scale and precision at most 18); a
    /// table lookup, since it is asked per value in decoding and encoding.
    public static func pow10(_ exponent: Int) -> Int64 { powersOfTen[exponent] }
}
