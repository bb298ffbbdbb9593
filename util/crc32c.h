// CRC-32C (Castagnoli), the checksum framed values carry. Uses the SSE4.2
// instruction where the CPU has it, a table otherwise; both give the same value.

#ifndef GEOKV_UTIL_CRC32C_H_
#define GEOKV_UTIL_CRC32C_H_

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace geokv::crc32c {

// Returns the CRC-32C of data[0, n) continued from `init` (0 for a fresh sum).
uint32_t Extend(uint32_t init, const char* data, size_t n);

inline uint32_t Value(std::string_view data) { return Extend(0, data.data(), data.size()); }

}  // namespace geokv::crc32c

#endif  // GEOKV_UTIL_CRC32C_H_
