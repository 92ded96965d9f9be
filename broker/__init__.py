"""The ProntoDB broker: ``storage`` (bytes on disk), ``engine`` (the state machine of one database) and
``database`` (the two joined). Import the part you need; this package imports nothing on its own."""
