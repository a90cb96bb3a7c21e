"""The detection core: columnar state of every active parcel, checked each tick."""
