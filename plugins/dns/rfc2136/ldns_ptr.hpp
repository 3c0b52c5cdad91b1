// Owning handles for ldns objects, so every early return frees what it built.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>

#include <ldns/ldns.h>

namespace certfleet::rfc2136 {

struct PktFree {
  void operator()(ldns_pkt* pkt) const { ldns_pkt_free(pkt); }
};
struct RrFree {
  void operator()(ldns_rr* rr) const { ldns_rr_free(rr); }
};
struct RrListFree {
  void operator()(ldns_rr_list* list) const { ldns_rr_list_deep_free(list); }
};
struct RdfFree {
  void operator()(ldns_rdf* rdf) const { ldns_rdf_deep_free(rdf); }
};
struct MallocFree {
  void operator()(void* data) const { std::free(data); }
};

using PktPtr = std::unique_ptr<ldns_pkt, PktFree>;
using RrPtr = std::unique_ptr<ldns_rr, RrFree>;
using RrListPtr = std::unique_ptr<ldns_rr_list, RrListFree>;
using RdfPtr = std::unique_ptr<ldns_rdf, RdfFree>;
// ldns hands out wire buffers and strings allocated with malloc.
using WirePtr = std::unique_ptr<std::uint8_t, MallocFree>;
using CharPtr = std::unique_ptr<char, MallocFree>;

}  // namespace certfleet::rfc2136
