"""The ProntoDB broker: storage (bytes on disk), engine (state machine) and the database that joins them."""
