// Files that hold secrets (gossip keys, users and their secret hashes):
// read whole, and refused unless only their owner may read or write them.

#ifndef GEOKV_UTIL_PRIVATE_FILE_H_
#define GEOKV_UTIL_PRIVATE_FILE_H_

#include <cstddef>
#include <string>

#include "util/status.h"

namespace geokv {

// The bytes of the regular file at `path`, or why not: it cannot be read
// (IOError), is not a regular file or group or others may read or write it
// (FailedPrecondition, saying to chmod 600 it), or is over `max_bytes`
// (InvalidArgument). Every message names the file as "`what` PATH".
StatusOr<std::string> ReadPrivateFile(const std::string& path, const std::string& what,
                                      size_t max_bytes);

}  // namespace geokv

#endif  // GEOKV_UTIL_PRIVATE_FILE_H_
