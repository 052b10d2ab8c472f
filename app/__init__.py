"""The Streamlit dashboard of the Inception block explorer."""
