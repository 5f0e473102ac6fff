"""The kdbus user-space ABI (final UAPI, August 2015): one source of truth for numbers and layouts.

`constants` holds every number, `structs` every fixed layout (declared with construct, with fast
`struct.Struct` twins derived from the same declarations), `items` the item walker and builders.
"""
