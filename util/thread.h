// What a thread of the node says about itself to the operating system.

#ifndef GEOKV_UTIL_THREAD_H_
#define GEOKV_UTIL_THREAD_H_

#include <pthread.h>

namespace geokv {

// Names the calling thread (`top -H`, `perf`, debuggers); at most 15
// characters are kept.
inline void NameThisThread(const char* name) { pthread_setname_np(pthread_self(), name); }

}  // namespace geokv

#endif  // GEOKV_UTIL_THREAD_H_
