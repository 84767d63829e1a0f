// Package edgetest holds tests of several lbd nodes working as one fleet
// behind ECMP routers: that they agree on the real of every flow, and (with
// a routing daemon, when one is installed) that their BGP announcements
// give the router one next hop per node. It has no code of its own.
package edgetest
