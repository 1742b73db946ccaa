"""Drop-in APIs of other libraries, implemented on spattn."""
